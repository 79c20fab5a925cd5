// dejavu: the library's public surface.
export { loadModel, Model, type LoadOptions } from './engine/model.js';
export type { GenerateOptions, GenerationResult, Generation, TokenLogprob, TopLogprob, PromptTokenLogprob } from './engine/generate.js';
export { MAX_LOGPROBS } from './engine/generate.js';
export type { SamplingOptions } from './engine/sampler.js';
export type { Runner, BackendName, BackendChoice, ForwardOptions, TracePoint } from './backend/types.js';
export type { OptConfig } from './model/config.js';
export type { FileSource } from './model/source.js';
export type { SparsityPolicy, MlpLayerPolicy, MlpSelector, LowRankPredictor, BlockRule, HeadLayerPolicy, HeadSelector } from './sparsity/policy.js';
export { loadPredictors, type PredictorSet, type PredictorManifest, type PolicyOptions, type SparsePart, type Selection } from './sparsity/predictors-io.js';
export { DejavuError } from './util/errors.js';
export { FetchFileSource } from './model/fetch-source.js';
// The HTTP server (Node only: node:http) is its own entry, 'dejavu/server', so that this one stays
// free of it for browser bundles.
