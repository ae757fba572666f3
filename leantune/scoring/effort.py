"""``effort``: DEALRec's effort score on the LLM, exact per sample and batched.

Effort = ‖∂ℓ_i/∂θ‖₂, the norm of the gradient of sample i's language-model loss with respect to
the LoRA ``B`` matrices of chosen modules (default: ``v_proj`` of the last layer). The training
text is prompt + response + EOS (``leantune.data.prompts``) and the loss is the mean token
cross-entropy over every token (the reference's ``train_on_inputs``), or over the response and
EOS only with ``mask_prompt``.

How it stays close to the cost of a forward pass:

* The layers below the first chosen layer run under ``no_grad`` (a pre-hook on that layer turns
  autograd on), and only the chosen ``lora_B`` weights require gradients, so the backward pass
  goes through the chosen layer(s), the final norm and nothing else.
* The LM head never materialises a batch × length × vocabulary tensor. For chunks of the positions
  that carry loss, ``∂ℓ/∂h = Wᵀ(softmax(Wh) − onehot(y)) / n_i`` is formed directly and handed to
  ``backward`` at the final hidden state.
* Per-sample gradients come from hooks on each ``lora_B``: with ``u_t = A x_t`` its input and
  ``g_t`` the gradient at its output, ``∂ℓ_i/∂B = Σ_t g_t u_tᵀ`` (one einsum per batch). Samples
  in a batch share no loss term, so one backward of Σ_i ℓ_i yields every sample's own gradient;
  padding positions carry no loss and are masked out.

Differences from the reference (Linxyhaha/DEALRec ``code/prune/effort_*.py``):

* The reference reads ``layers.31.self_attn.v_proj.lora_B`` of LLaMA-7B (8-bit, fp16) at batch 1.
  We read the same matrix of the last layer (``modules=("v_proj",)``, ``layers=(-1,)``); other
  modules/layers are options. Its default adapter is a trained Alpaca LoRA (``--resume_from_
  checkpoint``); ours is freshly initialised unless ``adapter`` names a peft folder. SmolLM2-
  Instruct is already instruction-tuned, which the Alpaca adapter supplies for plain LLaMA.
* A fresh adapter has B = 0 everywhere, so its LoRA adds nothing to the forward pass: we inject it
  into the chosen layers only, which gives the same gradient as an adapter on every layer
  (``A`` differs only by which random draws it gets; it is seeded by ``ctx.seed``).
* The reference runs in train mode (LoRA dropout 0.05, so its scores are random); we use eval
  mode, deterministic. Its per-sample loss divides by the length padded to a multiple of 8
  (``pad_to_multiple_of=8`` with ``reduction="none"``), and it back-propagates the loss twice
  (``mean(loss)`` then the sample's loss) under fp16 loss scaling: constant factors plus a small
  length-dependent one. We use the plain mean over the sample's loss tokens.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from ..errors import LeantuneError
from .base import SCORERS

DTYPES = ("float32", "bfloat16", "bfloat16-weights")
PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class EffortConfig:
    model: str = "smollm2"  # model name or folder (``ctx.options['model']`` overrides)
    adapter: str | None = None  # a peft LoRA folder; None = freshly initialised LoRA
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # modules that get a fresh LoRA adapter
    lora_r: int = 8
    lora_alpha: int = 16
    modules: tuple[str, ...] = ("v_proj",)  # modules whose lora_B gradient is measured
    layers: tuple[int, ...] = (-1,)  # decoder layers (negative: from the end)
    batch_size: int = 4  # length-sorted batches of 4 were fastest on 2 CPU cores
    max_tokens: int = 512
    dtype: str = "float32"  # "bfloat16": autocast; "bfloat16-weights": the model held in bf16 (LoRA in fp32); neither exact
    mask_prompt: bool = False  # loss on response + EOS only (BIGRec train_on_inputs=False)
    head_chunk: int = 512  # loss positions per LM-head chunk (bounds the logits memory)
    padding_side: str = "right"
    sort_by_length: bool = True  # batch similar lengths together (less padding)
    progress: bool = True

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise LeantuneError(f"effort dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.padding_side not in PADDING_SIDES:
            raise LeantuneError(f"effort padding_side {self.padding_side!r}: choose one of {', '.join(PADDING_SIDES)}")
        for name in ("batch_size", "max_tokens", "head_chunk", "lora_r"):
            if getattr(self, name) < 1:
                raise LeantuneError(f"effort {name} {getattr(self, name)}: must be at least 1")
        if not self.modules or not self.layers:
            raise LeantuneError("effort needs at least one module and one layer")
        if self.adapter is None and not set(self.modules) <= set(self.lora_targets):
            missing = sorted(set(self.modules) - set(self.lora_targets))
            raise LeantuneError(f"effort modules {missing} have no LoRA adapter (lora_targets: {', '.join(self.lora_targets)})")

    @classmethod
    def from_options(cls, options: dict, base: "EffortConfig | None" = None) -> "EffortConfig":
        """``base`` updated by ``options['model']`` and ``options['effort_<field>']`` entries."""
        base = base or cls()
        changes = {}
        if "model" in options:
            changes["model"] = str(options["model"])
        for f in fields(cls):
            key = f"effort_{f.name}"
            if key in options:
                changes[f.name] = _coerce(key, options[key], getattr(base, f.name))
        return replace(base, **changes)


def _coerce(key: str, value, default):
    """Option values may come from a command line as text: ``"q_proj,v_proj"``, ``"-1"``, ``"true"``."""
    try:
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            kind = type(default[0]) if default else str
            return tuple(kind(str(v).strip()) if kind is not str else str(v).strip() for v in items)
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int):
            return int(value)
    except (TypeError, ValueError):
        raise LeantuneError(f"option {key}={value!r}: expected a value like {default!r}") from None
    return value


# --------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Encoded:
    ids: tuple[int, ...]
    loss_from: int  # first position whose token is a loss target (1 = all tokens)


def encode_example(example, tokenizer, max_tokens: int = 512, mask_prompt: bool = False) -> Encoded:
    """A ``TextExample`` tokenised exactly as the trainer tokenises it (``leantune.data.tokenize``):
    prompt + response + EOS, cut at ``max_tokens``; with ``mask_prompt`` the loss starts at the response."""
    from ..data.tokenize import IGNORE_INDEX, tokenize_example

    row = tokenize_example(tokenizer, example, max_tokens, train_on_inputs=not mask_prompt)
    ids = row["input_ids"]
    loss_from = 1
    if mask_prompt:
        loss_from = max(1, next((i for i, label in enumerate(row["labels"]) if label != IGNORE_INDEX), len(ids)))
    return Encoded(tuple(ids), loss_from)


def encode_sample(dataset, sample, tokenizer, max_tokens: int = 512, mask_prompt: bool = False) -> Encoded:
    """A recommendation sample's prompt + response, tokenised as the trainer does (``encode_example``)."""
    from ..data.prompts import sample_prompt
    from ..tasks.base import TextExample

    rec = sample_prompt(dataset, sample, tokenizer, max_tokens=max_tokens)
    return encode_example(TextExample(rec.prompt, rec.response), tokenizer, max_tokens, mask_prompt)


# --------------------------------------------------------------------------- model
class EffortModel:
    """A causal LM with LoRA on the chosen layers and hooks that collect per-sample LoRA-B gradients."""

    def __init__(self, config: EffortConfig, device: str = "cpu", seed: int = 0):
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        from ..models.llm import load_model

        config.validate()
        self.config = config
        self.device = torch.device(device)
        if config.dtype != "float32":
            from ..device import warn_if_bf16_emulated

            warn_if_bf16_emulated(self.device.type, f"--opt effort_dtype={config.dtype}")
        base, self.tokenizer = load_model(config.model, self.weights_dtype(config), "cpu")
        n_layers = base.config.num_hidden_layers
        if any(not -n_layers <= i < n_layers for i in config.layers):
            raise LeantuneError(f"effort layers {list(config.layers)}: the model has {n_layers} layers (0..{n_layers - 1} or -1..-{n_layers})")
        self.layers = layers = sorted({i % n_layers for i in config.layers})
        base.config.use_cache = False
        # Seeded, so that every chunk and every process draws the same LoRA A.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if config.adapter:
                model = PeftModel.from_pretrained(base, config.adapter, is_trainable=False)
            else:
                lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, bias="none",
                                  target_modules=list(config.lora_targets), layers_to_transform=layers,
                                  task_type="CAUSAL_LM")
                model = get_peft_model(base, lora)
        model.eval().to(self.device)
        self.model = model
        self.lm = model.get_base_model()
        self.trunk = getattr(self.lm, self.lm.base_model_prefix)
        head = self.lm.get_output_embeddings()
        self.head_weight, self.head_bias = head.weight.detach(), (head.bias.detach() if head.bias is not None else None)
        for p in model.parameters():
            p.requires_grad_(False)
        self.targets = self._find_targets(model)
        for lora_b in self.targets.values():
            lora_b.weight.requires_grad_(True)
        self._inputs, self._grads = {}, {}
        for key, lora_b in self.targets.items():
            lora_b.register_forward_hook(self._hook(key))
        # The trunk runs under no_grad; autograd is switched on at the first chosen layer, so the
        # layers below it cost exactly a no-grad forward.
        self._switch_on_grad = False
        decoder_layers = getattr(self.trunk, "layers", None)
        self._trunk_no_grad = decoder_layers is not None and len(decoder_layers) == n_layers
        if self._trunk_no_grad:
            decoder_layers[layers[0]].register_forward_pre_hook(self._enable_grad)

    def _find_targets(self, model) -> dict:
        from peft.tuners.lora import LoraLayer

        found = {}
        for name, module in model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            parts = name.split(".")
            layer = next((int(p) for p in reversed(parts[:-1]) if p.isdigit()), None)
            if parts[-1] in self.config.modules and layer in self.layers:
                found[(layer, parts[-1])] = module.lora_B[model.active_adapter]
        wanted = {(layer, m) for layer in self.layers for m in self.config.modules}
        if set(found) != wanted:
            missing = ", ".join(f"layer {layer} {m}" for layer, m in sorted(wanted - set(found)))
            raise LeantuneError(f"effort: no LoRA adapter on {missing} of model {self.config.model!r}")
        return found

    def _enable_grad(self, module, args):
        if self._switch_on_grad:
            import torch

            torch.set_grad_enabled(True)

    def _hook(self, key):
        def hook(module, args, output):
            self._inputs[key] = args[0].detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self._grads.__setitem__(key, grad))

        return hook

    def encode(self, dataset, samples) -> list[Encoded]:
        c = self.config
        return [encode_sample(dataset, s, self.tokenizer, c.max_tokens, c.mask_prompt) for s in samples]

    @staticmethod
    def weights_dtype(config: EffortConfig) -> str:
        """The dtype the model's weights are loaded in (peft keeps a fresh LoRA adapter in float32)."""
        return "bfloat16" if config.dtype == "bfloat16-weights" else "float32"

    def _autocast(self):
        import torch

        if self.config.dtype != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.config.dtype))

    def batch_effort(self, batch: Sequence[Encoded], timings: dict | None = None) -> np.ndarray:
        """Effort of each encoded sample of one batch (exact per sample, independent of the batch)."""
        import torch

        squared = torch.zeros(len(batch), dtype=torch.float64, device=self.device)
        for per_sample in self._per_sample_grads(batch, timings):
            squared += per_sample.square().sum(dim=(1, 2)).double()
        return squared.sqrt().cpu().numpy()

    def batch_gradients(self, batch: Sequence[Encoded], timings: dict | None = None) -> np.ndarray:
        """Each sample's gradient of its mean answer loss w.r.t. the chosen LoRA-B matrices,
        flattened and concatenated in a fixed order: (len(batch), n_params) float32. Its row norms
        are ``batch_effort``."""
        import torch

        parts = [g.reshape(len(batch), -1) for g in self._per_sample_grads(batch, timings)]
        return torch.cat(parts, dim=1).cpu().numpy().astype(np.float32)

    def gradient_size(self) -> int:
        """Length of one ``batch_gradients`` row."""
        return sum(lora_b.weight.numel() for lora_b in self.targets.values())

    def _per_sample_grads(self, batch: Sequence[Encoded], timings: dict | None = None):
        """Per chosen LoRA-B matrix (in ``self.targets`` order), each sample's gradient (b, out, r);
        zeros for a matrix the batch's loss does not reach."""
        import torch

        timer = StageTimer(timings, self.device)
        ids, mask, positions, weights = self._collate(batch)
        self._inputs.clear()
        self._grads.clear()
        no_grad = torch.no_grad() if self._trunk_no_grad else contextlib.nullcontext()
        with timer("trunk"), self._autocast(), no_grad:
            self._switch_on_grad = True
            try:
                out = self.trunk(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            finally:
                self._switch_on_grad = False
            hidden = out.last_hidden_state
        with timer("head"):
            grad_hidden = self._head_grad(hidden.detach(), ids, weights)
        with timer("backward"):
            hidden.backward(grad_hidden.to(hidden.dtype))
            out = []
            for key, lora_b in self.targets.items():
                lora_b.weight.grad = None
                if key not in self._grads:  # no loss token in the batch
                    out.append(torch.zeros((len(batch), *lora_b.weight.shape), device=self.device))
                    continue
                g = self._grads[key].float() * mask[..., None]
                out.append(torch.einsum("bto,btr->bor", g, self._inputs[key].float()))
        self._inputs.clear()
        self._grads.clear()
        return out

    def _collate(self, batch: Sequence[Encoded]):
        """Padded ids, attention mask, position ids, and per-position loss weights 1/n_i on targets."""
        import torch

        length = max(len(e.ids) for e in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), length), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        # weights[i, t]: weight of predicting token t+1 from position t.
        weights = torch.zeros((len(batch), length), dtype=torch.float32)
        for i, e in enumerate(batch):
            n = len(e.ids)
            start = length - n if self.config.padding_side == "left" else 0
            ids[i, start:start + n] = torch.tensor(e.ids, dtype=torch.long)
            mask[i, start:start + n] = 1
            targets = n - e.loss_from
            if targets > 0:
                weights[i, start + e.loss_from - 1:start + n - 1] = 1.0 / targets
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device), weights.to(self.device)

    def _head_grad(self, hidden, ids, weights):
        """∂(Σ_i ℓ_i)/∂hidden, computed chunk by chunk without storing the full logits."""
        import torch

        batch, length, width = hidden.shape
        weight = self.head_weight.to(self.compute_dtype)
        bias = None if self.head_bias is None else self.head_bias.to(self.compute_dtype)
        flat_hidden = hidden.reshape(-1, width).to(self.compute_dtype)
        flat_weights = weights.reshape(-1)
        next_ids = torch.roll(ids, shifts=-1, dims=1).reshape(-1)  # the token each position predicts
        rows = torch.nonzero(flat_weights > 0).squeeze(1)
        grad = torch.zeros((batch * length, width), dtype=torch.float32, device=hidden.device)
        with torch.no_grad():
            for chunk in rows.split(self.config.head_chunk):
                logits = torch.nn.functional.linear(flat_hidden[chunk], weight, bias)
                # softmax(z) - onehot(y), scaled by the sample's 1/n: the gradient of its mean loss.
                probs = torch.softmax(logits.float(), dim=-1)
                probs[torch.arange(len(chunk), device=probs.device), next_ids[chunk]] -= 1.0
                probs *= flat_weights[chunk, None]
                grad[chunk] = (probs.to(self.compute_dtype) @ weight).float()
        return grad.reshape(batch, length, width)

    @property
    def compute_dtype(self):
        import torch

        return torch.float32 if self.config.dtype == "float32" else torch.bfloat16

    def scores(self, encoded: Sequence[Encoded], progress: bool | None = None, timings: dict | None = None) -> np.ndarray:
        """Effort for every encoded sample, in the given order."""
        from tqdm.auto import tqdm

        c = self.config
        order = np.argsort([len(e.ids) for e in encoded], kind="stable") if c.sort_by_length else np.arange(len(encoded))
        values = np.empty(len(encoded), dtype=np.float64)
        show = c.progress if progress is None else progress
        with tqdm(total=len(encoded), desc="effort", unit="sample", disable=not show, leave=False) as bar:
            for start in range(0, len(order), c.batch_size):
                part = order[start:start + c.batch_size]
                values[part] = self.batch_effort([encoded[i] for i in part], timings)
                bar.update(len(part))
        return values


class StageTimer:
    """Adds wall time per named stage to ``timings`` (synchronising CUDA); a no-op without it."""

    def __init__(self, timings: dict | None, device):
        self.timings, self.device = timings, device

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.timings is None:
            yield
            return
        self._sync()
        began = time.perf_counter()
        yield
        self._sync()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - began

    def _sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------- scorer
@SCORERS.register("effort")
class EffortScorer:
    """DEALRec effort on the LLM; options: ``model`` and ``effort_<field>`` of :class:`EffortConfig`."""

    name = "effort"

    def __init__(self, config: EffortConfig | None = None):
        self.config = config

    def resolve_config(self, ctx) -> EffortConfig:
        config = EffortConfig.from_options(ctx.options, self.config)
        config.validate()
        return config

    def model(self, ctx) -> EffortModel:
        """The scoring model for this context, built once and shared through ``ctx.extras``."""
        config = self.resolve_config(ctx)
        key = ("effort", config.model, config.adapter, config.lora_targets, config.lora_r, config.lora_alpha,
               config.modules, tuple(config.layers), EffortModel.weights_dtype(config), ctx.seed, str(ctx.device))
        cached = ctx.extras.get(key)
        if cached is None:
            cached = ctx.extras[key] = EffortModel(config, ctx.device, ctx.seed)
        cached.config = config  # batch size, dtype, masking etc. may differ between calls
        return cached

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        model = self.model(ctx)
        encoded = model.encode(ctx.dataset, samples)
        return {"effort": model.scores(encoded, progress=ctx.options.get("progress"))}
