/**
 * Loaders for the zero-shot tasks in /work/shared/data/eval (llm-foundry's JSONL layouts), turned into
 * (context, continuation) requests. Prompts follow lm-evaluation-harness so that numbers are comparable:
 * - copa:       "<premise> because/therefore" + " <choice>" (the file already holds the connective)
 * - piqa:       "Question: <goal>\nAnswer:" + " <solution>"
 * - arc_easy:   "Question: <question>\nAnswer:" + " <choice>"
 * - winogrande: partial scoring: the sentence up to the blank with each option filled in is the context,
 *               the shared rest of the sentence (" <continuation>") is scored
 * - lambada:    "<context>" + " <last word>"; the file's continuation is the last word
 */
import { fail } from '../util/errors.js';
import { Fields, parseJsonl } from './jsonl.js';

/** The text whose log-likelihood is scored, after the context that conditions it. */
export interface Request {
  context: string;
  continuation: string;
}

export interface McItem {
  /** One request per choice. */
  requests: Request[];
  gold: number;
}

export type McTask = 'copa' | 'piqa' | 'winogrande' | 'arc_easy';
export type Task = 'ppl' | 'lambada' | McTask;
export const MC_TASKS: readonly McTask[] = ['copa', 'piqa', 'winogrande', 'arc_easy'];
export const TASKS: readonly Task[] = ['ppl', 'lambada', ...MC_TASKS];

export function parseTask(s: string): Task {
  if (!(TASKS as readonly string[]).includes(s)) fail(`unknown task "${s}" (choose ${TASKS.join(', ')})`);
  return s as Task;
}

export function isMcTask(t: Task): t is McTask {
  return (MC_TASKS as readonly string[]).includes(t);
}

/** Context for a question + choice task: lm-eval's "Question: ...\nAnswer:" prompt. */
function questionPrompt(query: string): string {
  const q = query.trim();
  return q.startsWith('Question:') ? `${q}\nAnswer:` : `Question: ${q}\nAnswer:`;
}

/** Items of a multiple-choice file; `file` names it in errors. */
export function loadMcItems(task: McTask, text: string, file: string, limit = Infinity): McItem[] {
  return parseJsonl(text, file, limit).map(({ line, value }) => {
    const f = new Fields(file, line, value);
    if (task === 'winogrande') {
      const contexts = f.strings('context_options', 2);
      const cont = ' ' + f.string('continuation').trim();
      return { requests: contexts.map((c) => ({ context: c.trimEnd(), continuation: cont })), gold: f.index('gold', contexts.length) };
    }
    const query = f.string('query'), choices = f.strings('choices', 2);
    const context = task === 'copa' ? query.trimEnd() : questionPrompt(query);
    return { requests: choices.map((c) => ({ context, continuation: ' ' + c.trim() })), gold: f.index('gold', choices.length) };
  });
}

/** LAMBADA items: the context and the target word (with its leading space). */
export function loadLambadaItems(text: string, file: string, limit = Infinity): Request[] {
  return parseJsonl(text, file, limit).map(({ line, value }) => {
    const f = new Fields(file, line, value);
    return { context: f.string('context').trimEnd(), continuation: ' ' + f.string('continuation').trim() };
  });
}
