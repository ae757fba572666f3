"""Jobs end to end, each writing one resumable run folder: BIGRec (prune -> LoRA fine-tune ->
evaluate -> report, :mod:`.bigrec`) and TIGER (semantic IDs -> prune -> train -> evaluate -> report,
:mod:`.tiger`). The top library layer: pipelines call data, models, scoring, selection, training and
evaluation; only the CLI calls pipelines — except :mod:`.units`, the pruning path of every text
task, which learning curves also use to choose their subsets."""
