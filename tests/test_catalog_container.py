import pytest

from nbhelpers import catalog, container, releases
from nbhelpers.container import VllmOptions
from nbhelpers.errors import ConfigError


def test_catalog_has_the_fourteen_tutorial_models():
    assert len(catalog.MODELS) == 14
    assert len(catalog.models("llama3.1")) == 6
    assert len(catalog.models("llama3.2")) == 8
    assert len(catalog.models(modality="vision")) == 4
    for model in catalog.MODELS.values():
        assert model.hf_id == f"meta-llama/{model.name}"
        assert model.gated
        assert model.instruct == ("Instruct" in model.name)


def test_recommended_hardware_matches_the_tutorial():
    hw = {name: m.hardware.describe() for name, m in catalog.MODELS.items()}
    assert hw["Llama-3.1-8B-Instruct"] == "g2-standard-12 (1 x L4)"
    assert hw["Llama-3.1-70B"] == "a3-highgpu-4g (4 x H100 80GB)"
    assert hw["Llama-3.1-405B-Instruct-FP8"] == "a3-highgpu-8g (8 x H100 80GB)"
    assert hw["Llama-3.2-3B"] == "g2-standard-8 (1 x L4)"
    assert hw["Llama-3.2-11B-Vision-Instruct"] == "a2-highgpu-1g (1 x A100 40GB)"
    vision = catalog.get_model("Llama-3.2-90B-Vision")
    assert (vision.max_num_seqs, vision.max_model_len, vision.enforce_eager) == (12, 4096, True)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'Llama-3.1-9B' for llama3.1; choose "
                                          r"one of 'Llama-3.1-8B', "):
        catalog.get_model("Llama-3.1-9B", "llama3.1")
    assert catalog.get_model("meta-llama/Llama-3.2-1B").name == "Llama-3.2-1B"


def test_machine_type_must_match_its_gpus():
    with pytest.raises(ConfigError, match="unknown machine type"):
        catalog.Hardware.for_machine("n1-standard-4")
    with pytest.raises(ConfigError, match="comes with 1 x NVIDIA_L4"):
        catalog.Hardware("g2-standard-12", "NVIDIA_L4", 2)


def test_server_args_and_env():
    model = catalog.get_model("Llama-3.2-11B-Vision-Instruct")
    opts = VllmOptions().resolved(model, 1)
    spec = container.container_spec(model, opts, hf_token="hf_secretvalue123")
    assert spec.args[:3] == ["python", "-m", "vllm.entrypoints.api_server"]
    assert "--model=meta-llama/Llama-3.2-11B-Vision-Instruct" in spec.args
    assert "--max-num-seqs=12" in spec.args and "--enforce-eager" in spec.args
    assert spec.env == {"MODEL_ID": model.hf_id, "DEPLOY_SOURCE": "notebook",
                        "HF_TOKEN": "hf_secretvalue123"}
    assert "hf_secretvalue123" not in repr(spec)
    assert spec.image_uri.endswith(":20250710_0916_RC01")
    without = container.container_spec(model, opts, weights_uri="gs://b/llama")
    assert "HF_TOKEN" not in without.env and "--model=gs://b/llama" in without.args


def test_options_are_checked():
    model = catalog.get_model("Llama-3.1-8B")
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        VllmOptions(gpu_memory_utilization=1.5).resolved(model, 1)
    with pytest.raises(ConfigError, match="tensor_parallel_size 2 needs that many GPUs"):
        VllmOptions(tensor_parallel_size=2).resolved(model, 1)
    with pytest.raises(ConfigError, match="131072"):
        VllmOptions(max_model_len=200_000).resolved(model, 1)
    with pytest.raises(ConfigError, match="unknown vLLM container tag"):
        releases.image_uri("latest")
    assert releases.RELEASES[releases.DEFAULT_TAG] == "0.9.2"


def test_quantization_is_read_in_either_spelling():
    assert VllmOptions(extra_args=("--quantization=fp8",)).quantization == "fp8"
    assert VllmOptions(extra_args=("--enforce-eager", "--quantization", "fp8")).quantization \
        == "fp8"
    assert VllmOptions().quantization == ""


def test_memory_inputs_read_the_containers_own_arguments():
    model = catalog.get_model("Llama-3.1-8B-Instruct")
    options = VllmOptions(max_model_len=8192, extra_args=("--quantization", "fp8",
                                                          "--max-num-batched-tokens=4096"))
    spec = container.container_spec(model, options.resolved(model, 1), tag="20241001_0916_RC00")
    inputs = container.memory_inputs(model, spec.args, spec.image_uri)
    assert inputs == {
        "model": "Llama-3.1-8B-Instruct", "accelerator_count": 1, "dtype": "fp8",
        "gpu_memory_utilization": 0.9, "max_model_len": 8192, "max_num_seqs": 256,
        "max_num_batched_tokens": 4096, "enforce_eager": False, "vllm_version": "0.6.2",
        "kv_cache_dtype": "auto", "swap_space_gib": 16.0}  # the container asks for 16 GiB
    # What the server would refuse is skipped when reading, and vLLM's defaults fill the rest.
    bare = ["python", "-m", "vllm.entrypoints.api_server", "--max-num-seqs=lots"]
    assert container.memory_inputs(model, bare, "image:unknown-tag")["max_model_len"] == 131072
