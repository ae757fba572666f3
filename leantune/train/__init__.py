"""LoRA fine-tuning (peft + Hugging Face Trainer), resumable and pausable.

``finetune(model_spec, train, valid, out_dir, cfg)`` -> ``FinetuneResult``;
``load_finetuned(model_spec, adapter_dir)`` -> ``(model, tokenizer)``.
"""
from .config import ALL_LINEAR, STATUSES, FinetuneConfig, FinetuneResult, parse_target_modules
from .lora import finetune, latest_checkpoint, load_finetuned

__all__ = ["ALL_LINEAR", "STATUSES", "FinetuneConfig", "FinetuneResult", "finetune", "latest_checkpoint", "load_finetuned",
           "parse_target_modules"]
