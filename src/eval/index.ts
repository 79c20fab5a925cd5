/** The evaluation library, usable without the CLI: `import { perplexity, ... } from 'dejavu/dist/src/eval/index.js'`. */
export { perplexity, type PerplexityOptions, type PerplexityResult } from './perplexity.js';
export { multipleChoice, mcResult, type McResult } from './multiple-choice.js';
export { lambada, type LambadaResult } from './lambada.js';
export { comparePerplexity, compareMultipleChoice, compareLambada, type PerplexityComparison, type McComparison, type LambadaComparison } from './compare.js';
export { scoreRequest, scoreIds, type ContinuationScore } from './score.js';
export { loadMcItems, loadLambadaItems, parseTask, isMcTask, TASKS, MC_TASKS, type McItem, type McTask, type Request, type Task } from './tasks.js';
export { splitDocuments, tokenizeDocuments, windowsOf, DOCUMENT_SEPARATOR } from './corpus.js';
export { readDataFile } from './jsonl.js';
export type { ProgressFn } from './progress.js';
