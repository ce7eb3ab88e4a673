"""The stages of a curation run, one folder each (its config, its logic, its stage class); the pipeline
(curate.pipeline) lists them in order. A stage package's __init__ imports nothing, so a config section
loads without the stage's dependencies."""
