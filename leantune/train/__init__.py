"""LoRA fine-tuning (peft + Hugging Face Trainer), resumable and pausable.

``finetune(model_spec, train, valid, out_dir, cfg)`` -> ``FinetuneResult``;
``load_finetuned(model_spec, adapter_dir)`` -> ``(model, tokenizer)``.

The from-scratch training loops of the recommenders live beside it: ``train.sasrec`` (the DEALRec
surrogate), ``train.tiger`` (TIGER) and ``train.rqvae`` (semantic IDs); ``models/`` holds the models.
"""
from .config import ALL_LINEAR, STATUSES, FinetuneConfig, FinetuneResult, parse_target_modules
from .lora import adapter_fingerprint, checkpointed_steps, finetune, latest_checkpoint, load_finetuned, load_training_record, save_training_record

__all__ = ["ALL_LINEAR", "adapter_fingerprint", "checkpointed_steps", "STATUSES", "FinetuneConfig", "FinetuneResult", "finetune", "latest_checkpoint", "load_finetuned",
           "load_training_record", "save_training_record",
           "parse_target_modules"]
