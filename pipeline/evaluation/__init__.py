"""Scoring predictions against SMITE-50-layout ground truth (mIoU, DAVIS J/F, flicker)."""
