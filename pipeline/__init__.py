"""The data plane of smite: run a SMITE labeling job from Python (README "Using it from Python").

Names load on first access, so ``import pipeline`` stays light and only what is used pulls in Ray or diffusers::

    config = load_config("tiny", ["train.epochs=5"])               # preset or YAML path, then overrides
    trained = train_part_model("refs/car", "models/car", config)    # a reference set -> a part model folder
    batch = segment_videos(["videos/"], str(trained.model_dir), "out/car", config)  # Ray; Parquet masks
    write_report(output_report("out/car"), "out/car/report.html")

Errors a user can cause are :class:`smite_ops.errors.InputError` subclasses with a one-line message.
"""

from smite_ops.lazy import lazy_exports

__all__ = [
    "BatchResult",
    "EvaluationReport",
    "JobConfig",
    "SegmentedVideo",
    "TrainResult",
    "VideoInput",
    "VideoResult",
    "evaluate_predictions",
    "expand_inputs",
    "export_masks",
    "generate_benchmark",
    "label_maps",
    "load_config",
    "output_report",
    "save_label_maps",
    "segment_video_file",
    "segment_videos",
    "train_part_model",
    "write_report",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "JobConfig": "pipeline.config",
    "load_config": "pipeline.config",
    "VideoInput": "pipeline.io.inputs",
    "expand_inputs": "pipeline.io.inputs",
    "TrainResult": "pipeline.training.train",
    "train_part_model": "pipeline.training.train",
    "SegmentedVideo": "pipeline.batch.sequential",
    "segment_video_file": "pipeline.batch.sequential",
    "segment_videos": "pipeline.batch.driver",
    "BatchResult": "pipeline.batch.results",
    "VideoResult": "pipeline.batch.results",
    "label_maps": "pipeline.sinks.run_outputs",
    "EvaluationReport": "pipeline.evaluation.evaluate",
    "evaluate_predictions": "pipeline.evaluation.evaluate",
    "save_label_maps": "pipeline.evaluation.evaluate",
    "output_report": "pipeline.report.html",
    "write_report": "pipeline.report.html",
    "export_masks": "pipeline.export",
    "generate_benchmark": "pipeline.synth",
})
