"""Training: data, corruption, losses, optimizers, the loop and the parts it runs on.

The loop is `loop.Trainer`; the model directory it writes, `run_directory`.

Training data, clean patches from image directories and tensorflow-datasets:

Two samplers give the same thing, a float32 [B, P, P, C] batch of clean patches on the
0-255 scale, with random integer-offset crops (the clean target is never resampled),
flips and 90-degree rotations:

- `InMemorySampler` (directories, `dataset.cache: true`; `bfcnn/training/sampler.py`): the
  images are decoded once into one flat uint8 tensor and a batch is drawn in-graph from a
  stateless seed `(train.seed, step)`. Drawing costs next to nothing, runs inside the
  training step, and a resumed run sees exactly the batches an uninterrupted one would.
- `streaming_dataset` (tensorflow-datasets sources, or `cache: false`;
  `bfcnn/training/streaming.py`): a `tf.data` pipeline with parallel decoding and
  prefetch, for datasets too large for memory.

The images the sampler caches are decoded by `bfcnn/training/images.py` (`load_directory`,
`load_paired_directory`), which also estimates their size from the file headers
(`estimated_cache_bytes`, against `MAX_CACHE_BYTES`). Images smaller than the patch are
padded by symmetric reflection (repeated when the image is less than half the patch), the
same way in both samplers.

Paired sources (`dataset.inputs[].paired`, two directories of the same scenes with independent
noise, for Noise2Noise on real noise, Lehtinen et al., ICML 2018) are loaded pair by pair as
one image with the channels of both copies side by side, [H, W, 2C] (`load_paired_directory`),
so a crop, flip or rotation cuts both copies at exactly the same place; the trainer splits the
channels again. In a run with a paired source every image has that layout (a plain image is
stored twice) and each patch carries a flag saying whether it is a real pair.
"""
