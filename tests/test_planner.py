"""The preflight planner: real vLLM outcomes, the tutorial's configurations, the whole catalog,
the command line, and its promise to import nothing heavy."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from nbhelpers import catalog, hardware, planner
from nbhelpers.errors import ConfigError
from nbhelpers.planner import plan_memory

OUTCOMES = json.loads((Path(__file__).parent / "data" / "vllm_startup_outcomes.json").read_text())
SETTINGS = ("accelerator", "gpu_memory_gib", "accelerator_count", "vllm_version",
            "gpu_memory_utilization", "max_model_len", "max_num_seqs", "enforce_eager")


def _plan_case(case: dict) -> planner.MemoryPlan:
    settings = {k: case[k] for k in SETTINGS if k in case}
    if "config_overrides" in case:
        config = {**catalog.hf_config(case["model"]), **case["config_overrides"]}
        return plan_memory(config=config, **settings)
    return plan_memory(case["model"], **settings)


def _reported_tokens(case: dict, plan: planner.MemoryPlan) -> int | None:
    reported = case["reported"]
    if "kv_cache_tokens" in reported:
        return reported["kv_cache_tokens"]
    if "kv_cache_gib" in reported:  # vLLM's own rounding: whole blocks of 16 tokens
        block = plan.kv_bytes_per_token * planner.BLOCK_SIZE
        return int(reported["kv_cache_gib"] * planner.GIB // block) * planner.BLOCK_SIZE
    return None


def test_outcomes_are_cited_and_complete():
    assert len(OUTCOMES["cases"]) >= 9
    for case in OUTCOMES["cases"]:
        assert case["url"].startswith("https://github.com/vllm-project/vllm/"), case["id"]
        assert case["role"] in ("calibration", "validation")
        assert case["reported"]["verdict"] in planner.VERDICTS
        assert case["reported"]["quote"]
        assert "accelerator" in case or "gpu_memory_gib" in case


def test_verdicts_and_kv_tokens_against_real_vllm_startups():
    """Prints the accuracy table (run with -s); the verdicts must all match, and the KV-token
    error on the text-model cases stays within 10%."""
    rows, errors, hits = [], {}, 0
    for case in OUTCOMES["cases"]:
        plan = _plan_case(case)
        expected = case["reported"]["verdict"]
        hits += plan.verdict == expected
        reported = _reported_tokens(case, plan)
        error = None if not reported else (plan.kv_cache_tokens - reported) / reported
        if error is not None:
            errors[case["id"]] = error
        rows.append(f"  {case['role'][:5]:5} {expected:>13} {plan.verdict:>13} "
                    f"{reported or '-':>8} {plan.kv_cache_tokens:>8} "
                    f"{'' if error is None else f'{error:+.1%}':>8}  {case['id']}")
    cases = len(OUTCOMES["cases"])
    validation = [c for c in OUTCOMES["cases"] if c["role"] == "validation"]
    validation_hits = sum(_plan_case(c).verdict == c["reported"]["verdict"] for c in validation)
    print("\n  role       reported     predicted  KV rep.  KV pred.   error  case")
    print("\n".join(rows))
    absolute = [abs(e) for e in errors.values()]
    print(f"  verdict accuracy: {hits}/{cases} ({hits / cases:.0%}); validation only: "
          f"{validation_hits}/{len(validation)}")
    print(f"  KV-token error over {len(absolute)} cases with a reported size: median "
          f"{statistics.median(absolute):.1%}, worst {max(absolute):.1%}")
    assert hits == cases
    text = [abs(e) for key, e in errors.items() if "Vision" not in key]
    assert text and max(text) < 0.10


def _architecture(case: dict) -> planner.Architecture:
    if "config_overrides" in case:
        return planner.Architecture.from_config(
            {**catalog.hf_config(case["model"]), **case["config_overrides"]})
    return planner.architecture(case["model"])


def test_weights_per_gpu_against_vllms_own_log():
    """Weight memory per GPU (TP sharding, replicated KV heads, padded vocabulary, tied
    embeddings, vision tower, FP8 MLPs, rotary cache) against 'Loading model weights took'."""
    cases = [c for c in OUTCOMES["cases"] if "weights_gib" in c["reported"]]
    cases += [{**c, "reported": {"weights_gib": c["weights_gib"]}} for c in OUTCOMES["weights"]]
    errors = []
    for case in cases:
        count = case.get("accelerator_count", 1)
        estimated = _architecture(case).weight_bytes(count, 2, False) / planner.GIB
        reported = case["reported"]["weights_gib"]
        errors.append((estimated - reported) / reported)
        print(f"  weights TP{count}: reported {reported:8.4f} GiB, planner {estimated:8.4f} GiB "
              f"({errors[-1]:+.2%})  {case['id']}")
    print(f"  weights: {len(errors)} logs, worst error {max(map(abs, errors)):.2%}")
    assert len(errors) >= 9 and max(map(abs, errors)) < 0.02


TUTORIAL_WORKING = [  # the reference notebooks' configurations (../shared/docs/anchors.md)
    (m.name, m.hardware.accelerator_type, m.hardware.accelerator_count, m) for m in
    catalog.MODELS.values()
]


@pytest.mark.parametrize("name,accelerator,count,model", TUTORIAL_WORKING,
                         ids=[t[0] for t in TUTORIAL_WORKING])
def test_the_reference_configurations_start(name, accelerator, count, model):
    plan = plan_memory(name, accelerator=accelerator, accelerator_count=count,
                        max_model_len=model.max_model_len, max_num_seqs=model.max_num_seqs,
                        gpu_memory_utilization=model.gpu_memory_utilization,
                        enforce_eager=model.enforce_eager)
    assert plan.verdict == "ok", plan.describe()
    assert plan.kv_cache_tokens >= model.max_model_len and not plan.fixes


def test_the_seed_tutorials_70b_on_eight_l4_starts():
    plan = plan_memory("Llama-3.1-70B-Instruct", accelerator="NVIDIA_L4", accelerator_count=8)
    assert plan.ok, plan.describe()


def test_the_tutorials_failures_are_predicted():
    # Its debugging section pairs 11B Vision with an L4: the bf16 weights alone exceed 90% of it.
    arch = planner.architecture("Llama-3.2-11B-Vision-Instruct")
    l4 = hardware.ACCELERATORS["NVIDIA_L4"].memory_gib
    assert arch.weight_bytes(1, 2, False) / planner.GIB > 0.9 * l4
    for seqs in (256, 12, 1):
        on_l4 = plan_memory("Llama-3.2-11B-Vision-Instruct", accelerator="NVIDIA_L4",
                             max_num_seqs=seqs, enforce_eager=True)
        assert on_l4.verdict == "oom" and on_l4.kv_cache_tokens == 0
    # The OOM trace it quotes is on a 40 GB GPU with max_num_seqs 256.
    on_a100 = plan_memory("Llama-3.2-11B-Vision-Instruct", accelerator="NVIDIA_TESLA_A100",
                           max_num_seqs=256)
    assert on_a100.verdict == "oom" and "vision encoder" in on_a100.reason
    assert any("CUDA out of memory" in line for line in on_a100.failure_lines())
    fewer = [f for f in on_a100.fixes if set(f.changes) == {"max_num_seqs"}][0]
    assert 12 <= fewer.changes["max_num_seqs"] < 256
    assert plan_memory("Llama-3.2-11B-Vision-Instruct", accelerator="NVIDIA_TESLA_A100",
                        max_num_seqs=fewer.changes["max_num_seqs"]).ok
    # The whole 128k context of the 8B does not fit an L4: vLLM's max-seq-len refusal.
    long = plan_memory("Llama-3.1-8B-Instruct", accelerator="NVIDIA_L4", max_model_len=131072)
    assert long.verdict == "max_model_len" and 0 < long.kv_cache_tokens < 131072
    assert "estimated maximum model length is" in long.failure_lines()[0]  # V1 wording (0.9.2)
    old = plan_memory("Llama-3.1-8B-Instruct", accelerator="NVIDIA_L4", max_model_len=131072,
                       vllm_version="0.6.2")
    assert "larger than the maximum number of tokens that can be stored in KV cache" in \
        old.failure_lines()[0]
    shorter = [f for f in long.fixes if "max_model_len" in f.changes][0]
    assert plan_memory("Llama-3.1-8B-Instruct", accelerator="NVIDIA_L4",
                        max_model_len=shorter.changes["max_model_len"]).ok


def test_kv_cache_accounting_follows_vllm():
    arch = planner.architecture("Llama-3.1-70B")
    assert arch.kv_bytes_per_token(1, 2) == 2 * 80 * 8 * 128 * 2
    assert arch.kv_bytes_per_token(8, 2) == 2 * 80 * 1 * 128 * 2  # one KV head per GPU
    assert arch.kv_bytes_per_token(8, 1) * 2 == arch.kv_bytes_per_token(8, 2)  # fp8 cache
    plan = plan_memory("Llama-3.2-1B", accelerator="H100")
    assert plan.kv_cache_tokens == plan.kv_cache_blocks * 16
    assert plan.max_concurrency == round(plan.kv_cache_tokens / 4096, 2)
    fp8 = plan_memory("Llama-3.1-8B", accelerator="L4", dtype="fp8")
    bf16 = plan_memory("Llama-3.1-8B", accelerator="L4")
    assert fp8.memory.weights < 0.6 * bf16.memory.weights and fp8.kv_cache_tokens > \
        bf16.kv_cache_tokens
    vision = planner.architecture("Llama-3.2-11B-Vision")
    assert vision.layers == 40 and vision.vision and vision.vision.image_tokens == 6404


def test_every_catalog_model_on_every_gpu_and_count():
    """14 models x 5 GPUs x 1-8 GPUs: a plan or a clear refusal of the tensor-parallel size."""
    planned = refused = 0
    for name in catalog.MODELS:
        for accelerator in hardware.ACCELERATORS:
            for count in range(1, 9):
                try:
                    plan = plan_memory(name, accelerator=accelerator, accelerator_count=count)
                except ConfigError as err:
                    assert count in (3, 5, 6, 7) and "choose one of 1, 2, 4, 8" in str(err)
                    refused += 1
                    continue
                planned += 1
                assert plan.verdict in planner.VERDICTS
                assert (plan.kv_cache_tokens >= 4096) == plan.ok
                json.dumps(plan.to_dict())
                if not plan.ok:
                    assert plan.failure_lines() and plan.reason
    assert planned == 14 * 5 * 4 and refused == 14 * 5 * 4


def test_a_config_outside_the_catalog():
    config = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 256,
              "intermediate_size": 1024, "vocab_size": 1000, "max_position_embeddings": 2048}
    plan = plan_memory(config=config, gpu_memory_gib=8, max_model_len=2048)
    assert plan.ok and plan.kv_bytes_per_token == 2 * 2 * 2 * 64 * 2
    with pytest.raises(ConfigError, match="lacks 'num_attention_heads', 'hidden_size'"):
        plan_memory(config={"num_hidden_layers": 2}, gpu_memory_gib=8)


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "Llama-3.1-9B", "accelerator": "L4"}, "unknown model 'Llama-3.1-9B'"),
    ({"model": "Llama-3.1-8B", "accelerator": "T4"}, "unknown accelerator 'T4'; choose one"),
    ({"model": "Llama-3.1-8B"}, "give an accelerator"),
    ({"model": "Llama-3.1-8B", "accelerator": "L4", "dtype": "int3"}, "unknown dtype 'int3'"),
    ({"model": "Llama-3.1-8B", "accelerator": "L4", "gpu_memory_utilization": 1.5},
     "gpu_memory_utilization must be in"),
    ({"model": "Llama-3.1-8B", "accelerator": "L4", "max_model_len": 200000},
     "more than the 131072 positions"),
    ({"model": "Llama-3.2-11B-Vision", "accelerator": "H100", "vllm_version": "0.11.0"},
     "Llama 3.2 Vision runs on vLLM 0.6.2 to 0.10.2"),
    ({"accelerator": "L4"}, "give either model"),
])
def test_bad_input_says_what_to_change(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_memory(**kwargs)


def test_command_line_prints_the_plan_and_json():
    run = subprocess.run([sys.executable, "-m", "nbhelpers", "plan", "--model",
                          "Llama-3.2-11B-Vision-Instruct", "--accelerator", "NVIDIA_TESLA_A100",
                          "--max-num-seqs", "256", "--json"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # not ok: exit status 1, for scripts
    data = json.loads(run.stdout)
    assert data["verdict"] == "oom" and data["memory"]["weights"] > 19 and data["fixes"]
    ok = subprocess.run([sys.executable, "-m", "nbhelpers", "plan", "--model",
                         "Llama-3.1-8B-Instruct", "--accelerator", "L4"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ": OK" in ok.stdout and "KV cache:" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "nbhelpers", "plan", "--model", "nope",
                          "--accelerator", "L4"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr


def test_planner_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import nbhelpers.planner; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] not in "
            "sys.stdlib_module_names and m.split('.')[0] != 'nbhelpers'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
