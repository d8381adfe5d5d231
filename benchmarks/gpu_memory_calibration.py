"""Measures, on a real GPU with random weights, what the planner estimates from config.json.

Needs torch and transformers and a CUDA GPU (not part of the test suite; run it where `device`
lends one): `python benchmarks/gpu_memory_calibration.py [--quick]`. It prints, per figure, the
measurement next to the planner's estimate:

1. parameters of every catalog architecture, counted on the meta device (no memory), against
   the planner's weight bytes (less the vLLM-only rotary cache and vocabulary padding);
2. the peak activation of a Llama 3.1 8B-shaped decoder layer stack (2 layers, vLLM's shapes) for
   a prefill of T tokens, written the way vLLM computes it (fused QKV and gate/up projections,
   SiLU-and-multiply, flash attention), against tokens x (6 x intermediate + 6 x hidden) bytes;
   and of vLLM V0's sampler on the profile run's dummy rows, against the planner's bytes per
   logit;
3. the peak activation of the Llama 3.2 Vision encoder (transformers' MllamaVisionModel, the
   code vLLM's mllama was written from) per 4-tile image, against the planner's per-image term.

Seen on one H100 80GB (torch 2.11, transformers 5.17), 2026-11-24: parameter counts equal the
planner's for all seven architectures; the prefill peak is 4-8% below the planner's term (2048 to
32768 tokens), the sampler 36 bytes per logit (planner: 41, from vLLM's own log); transformers'
vision encoder takes 946 MB per image, about three times the planner's 330 MB, because it keeps
every layer's output where vLLM keeps the five it uses; vLLM's own log (vllm#12126) shows about
300 MB per image, so the planner keeps its term.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbhelpers import catalog, planner  # noqa: E402

GIB = 1024**3


def _hf_keys(config: dict) -> dict:
    """The config without the keys transformers' config classes set themselves."""
    skip = {"architectures", "model_type", "torch_dtype", "supported_aspect_ratios"}
    return {k: v for k, v in config.items() if k not in skip}


def _parameters() -> None:
    import torch
    import transformers

    print("1. parameters (meta device) vs planner weight bytes / 2")
    for base in ("Llama-3.2-1B", "Llama-3.2-3B", "Llama-3.1-8B", "Llama-3.1-70B",
                 "Llama-3.1-405B-FP8", "Llama-3.2-11B-Vision", "Llama-3.2-90B-Vision"):
        config = dict(catalog.hf_config(base))
        config.pop("quantization_config", None)  # count parameters, not bytes
        arch = planner.Architecture.from_config(config)
        config = _hf_keys(config)
        if "text_config" in config:
            hf = transformers.MllamaConfig(text_config=_hf_keys(config["text_config"]),
                                           vision_config=_hf_keys(config["vision_config"]))
            cls = transformers.MllamaForConditionalGeneration
        else:
            hf = transformers.LlamaConfig(**config)
            cls = transformers.LlamaForCausalLM
        with torch.device("meta"):
            model = cls(hf)
        counted = sum(p.numel() for p in model.parameters())
        rotary = arch.max_positions * arch.head_dim
        padding = (planner._pad(arch.vocab + arch.extra_embeddings, 64) - arch.vocab
                   - arch.extra_embeddings) * arch.hidden
        estimated = arch.weight_bytes(1, 2, False) / 2 - rotary - padding
        print(f"   {base:22} counted {counted / 1e9:8.3f} B  planner {estimated / 1e9:8.3f} B  "
              f"({(estimated - counted) / counted:+.2%})")


def _peak(fn) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        out = fn()
    torch.cuda.synchronize()
    del out
    return torch.cuda.max_memory_allocated() - base


def _decoder(tokens_list: list[int]) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    arch = planner.architecture("Llama-3.1-8B")
    h, i, hd = arch.hidden, arch.intermediate, arch.head_dim
    q, kv = arch.heads * hd, arch.kv_heads * hd
    dev, dt = "cuda", torch.bfloat16
    layers = [dict(qkv=torch.randn(q + 2 * kv, h, device=dev, dtype=dt) * 0.02,
                   o=torch.randn(h, q, device=dev, dtype=dt) * 0.02,
                   gate_up=torch.randn(2 * i, h, device=dev, dtype=dt) * 0.02,
                   down=torch.randn(h, i, device=dev, dtype=dt) * 0.02,
                   n1=torch.ones(h, device=dev, dtype=dt), n2=torch.ones(h, device=dev, dtype=dt))
              for _ in range(2)]

    def rms(x, w):
        return F.rms_norm(x, (x.shape[-1],), w, 1e-5)

    def forward(tokens: int):
        hidden = torch.randn(tokens, h, device=dev, dtype=dt)  # the embedding output
        residual = hidden
        for layer in layers:
            x = rms(hidden, layer["n1"])
            qkv = F.linear(x, layer["qkv"])
            del x
            qs, ks, vs = qkv.split([q, kv, kv], dim=-1)
            attn = torch.empty(tokens, q, device=dev, dtype=dt)
            group = arch.heads // arch.kv_heads
            for head in range(arch.kv_heads):  # like flash-attn varlen: no T x T scores
                cols = slice(head * group * hd, (head + 1) * group * hd)
                qh = qs[:, cols].reshape(tokens, group, hd).transpose(0, 1).unsqueeze(0)
                kh, vh = (t[:, head * hd:(head + 1) * hd].unsqueeze(0).unsqueeze(0)
                          .expand(1, group, tokens, hd).contiguous() for t in (ks, vs))
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    out = F.scaled_dot_product_attention(qh.contiguous(), kh, vh, is_causal=True)
                attn[:, cols] = out[0].transpose(0, 1).reshape(tokens, group * hd)
                del qh, kh, vh, out
            del qkv, qs, ks, vs
            hidden = F.linear(attn, layer["o"])
            del attn
            residual = residual + hidden
            x = rms(residual, layer["n2"])
            gate_up = F.linear(x, layer["gate_up"])
            del x
            act = torch.empty(tokens, i, device=dev, dtype=dt)
            for rows in range(0, tokens, 256):  # like vLLM's fused SiluAndMul: no temporaries
                gate, up = gate_up[rows:rows + 256].chunk(2, dim=-1)
                torch.mul(F.silu(gate), up, out=act[rows:rows + 256])
            del gate_up, gate, up  # the views would keep gate_up's storage alive
            hidden = F.linear(act, layer["down"])
            del act
        return residual + hidden

    print("2. Llama 3.1 8B-shaped prefill: measured peak vs tokens x (6 I + 6 H) bytes")
    forward(256)
    for tokens in tokens_list:
        measured = _peak(lambda t=tokens: forward(t))
        estimated = arch.forward_bytes(tokens, 1, 2)
        print(f"   {tokens:6} tokens: measured {measured / GIB:6.3f} GiB  planner "
              f"{estimated / GIB:6.3f} GiB  ({(estimated - measured) / measured:+.1%})")


def _sampler(rows_list: list[int]) -> None:
    """vLLM V0's sampler on the profile run's dummy rows (temperature, top-k and top-p set):
    fp32 logits, the sort top-k/top-p needs (values and int64 indices), the masked scatter back,
    then probabilities, log-probabilities and the exponential draw."""
    import torch

    arch = planner.architecture("Llama-3.1-8B")
    vocab = planner._pad(arch.vocab, 64)

    def sample(rows: int):
        logits = torch.randn(rows, vocab, device="cuda", dtype=torch.bfloat16).float()
        logits.div_(0.5)
        values, order = logits.sort(dim=-1, descending=False)
        cut = values.gather(1, torch.full((rows, 1), 1, device="cuda"))  # top-k = vocab - 1
        values.masked_fill_(values < cut, -float("inf"))
        probs_sort = values.softmax(dim=-1)
        cumulative = probs_sort.cumsum(dim=-1)
        values.masked_fill_(cumulative <= 1 - 0.99, -float("inf"))
        logits = torch.empty_like(values).scatter_(dim=-1, index=order, src=values)
        del values, order, probs_sort, cumulative
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        logprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float)
        draw = torch.empty_like(probs).exponential_()
        return probs.div_(draw).argmax(dim=1), logprobs

    print(f"2b. sampler over the vocabulary ({vocab}): measured vs rows x vocab x "
          f"{planner.SAMPLER_BYTES_PER_LOGIT} bytes")
    sample(8)
    for rows in rows_list:
        measured = _peak(lambda r=rows: sample(r))
        estimated = rows * vocab * planner.SAMPLER_BYTES_PER_LOGIT
        print(f"   {rows:5} rows: measured {measured / GIB:6.3f} GiB "
              f"({measured / rows / vocab:5.1f} bytes/logit)  planner {estimated / GIB:6.3f} GiB")


def _vision(images_list: list[int]) -> None:
    import torch
    import transformers

    config = catalog.hf_config("Llama-3.2-11B-Vision")["vision_config"]
    hf = transformers.MllamaVisionConfig(**_hf_keys(config))
    hf._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = transformers.MllamaVisionModel(hf).to(torch.bfloat16).eval()
    arch = planner.architecture("Llama-3.2-11B-Vision")

    def forward(images: int):
        pixels = torch.randn(images, 1, 4, 3, 560, 560, device="cuda", dtype=torch.bfloat16)
        ratio_ids = torch.full((images, 1), 6, device="cuda", dtype=torch.long)  # 2x2 tiles
        ratio_mask = torch.ones(images, 1, 4, device="cuda", dtype=torch.long)
        return model(pixel_values=pixels, aspect_ratio_ids=ratio_ids,
                     aspect_ratio_mask=ratio_mask).last_hidden_state

    print("3. Llama 3.2 Vision encoder, 4-tile images: measured peak vs planner")
    forward(1)
    per_image = arch.vision_image_bytes(1)
    for images in images_list:
        measured = _peak(lambda n=images: forward(n))
        estimated = images * per_image
        print(f"   {images:3} images: measured {measured / GIB:7.3f} GiB "
              f"({measured / images / 1e6:6.1f} MB/image)  planner {estimated / GIB:7.3f} GiB "
              f"({per_image / 1e6:6.1f} MB/image)  ({(estimated - measured) / measured:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer sizes")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{torch.cuda.get_device_properties(0).total_memory / GIB:.2f} GiB")
    _parameters()
    _decoder([2048, 8192] if args.quick else [2048, 8192, 20000, 32768])
    _sampler([256] if args.quick else [256, 1024])
    _vision([1, 4] if args.quick else [1, 4, 8, 16])


if __name__ == "__main__":
    main()
