"""Split: shot boundaries (content detector, TransNetV2, fixed stride) and the candidate clips planned from
them. `detector.SceneDetector` finds scenes, `plan.plan_clips` cuts them into clips, `stage.SplitStage` is
the pipeline's stage; `vfm-curate scenes` uses the detector alone."""
