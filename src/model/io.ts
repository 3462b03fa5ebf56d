/**
 * The model files API in one import: reading and validating (files.ts), building and loading
 * (load.ts), weight encodings (quantize.ts), the output folder's safety (output.ts) and saving
 * (save.ts).
 */
export { readModelFiles, resolveModelJson, type ModelFiles, type ShardFile } from './files.js';
export { buildModel, loadModel, modelTopology, zeroInitialized, type LoadedModel } from './load.js';
export { QUANTIZE_CHOICES, dominantEncoding, encodingOfFlag, type Encoding } from './quantize.js';
export { METADATA_KEY, checkOutputDir, type OutputCheck } from './output.js';
export { SHARD_BYTES, keptWeights, saveModel, type SavedModel, type SaveOptions, type WeightSource } from './save.js';
