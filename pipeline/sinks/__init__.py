"""What a segmentation run writes and reads back: masks, overlays, tracks, manifests, the output root."""
