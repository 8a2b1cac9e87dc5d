"""Segmenting videos: windows and shards, the Ray actors and batch driver, stitching, tracks, commit keys.

:mod:`pipeline.batch.sequential` is the one-process path (``smite segment-video``); :mod:`pipeline.batch.driver`
the Ray batch (``smite segment``); :mod:`pipeline.batch.results` what a batch returns (no Ray import)."""
