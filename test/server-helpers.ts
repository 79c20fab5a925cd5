import { loadModel, type Model } from '../src/engine/model.js';
import { createServer, type DejavuServer } from '../src/server/http.js';
import { MODELS } from './helpers.js';

/** The server tests' server: the embedded demo model on the CPU backend (deterministic, and fast enough), served as "demo". */
export interface DemoServer { model: Model; server: DejavuServer; base: string; stop(): Promise<void> }

export async function startDemoServer(): Promise<DemoServer> {
  const model = await loadModel(MODELS['5m'], { backend: 'cpu' });
  const server = createServer(model, { modelName: 'demo' });
  const base = await server.listen(0);
  return { model, server, base, stop: async () => { await server.close(); model.dispose(); } };
}
