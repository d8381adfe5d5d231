"""Every container release (its vLLM, its Google-only flags, Llama 3.2 Vision, ARM), the older
Meta model ids, and a price on every plan with MAX_HOURLY_COST (#17 items 4 and 5)."""

from __future__ import annotations

import pytest

import nbhelpers
from nbhelpers import catalog, hardware, prices, releases
from nbhelpers.errors import ConfigError
from nbhelpers.run_config import RunConfig, validate_config
from tests.conftest import FAKE_TOKEN, emulator_logs
from tests.test_notebooks import NOTEBOOKS, _outputs, run_suite
from tests.test_validation_before_billing import _nothing_created

OLD_TAG, PREFIX_CACHE_TAG, OPTIMIZED, ARM = (
    "20241001_0916_RC00", "20241210_0916_RC00", "20241029_0835_RC00", "20250717_0916_arm_RC01")
PREFIX_CACHE = "--host-prefix-kv-cache-utilization-target=0.7"
VERTEX_PARSER = ("--enable-auto-tool-choice", "--tool-call-parser=vertex-llama-3")


def _plan(model="Llama-3.1-8B-Instruct", **kwargs):
    return nbhelpers.plan_deployment(model, ask_for_token=False, weights_uri="gs://my-bucket/llama",
                                     **kwargs)


# --- the release table ----------------------------------------------------------------------
def test_the_tutorials_release_table_is_whole_with_its_vllm_versions():
    # Rows of the tutorial's "Model Garden vLLM container release notes" (tag: vLLM).
    published = {
        "20250717_0916_arm_RC01": "0.9.2", "20250710_0916_RC01": "0.9.2",
        "20250611_0916_RC01": "0.9.1", "20250601_0916_RC01": "0.9.0",
        "20250506_0916_RC01": "0.8.5.post1", "20250429_0916_RC01": "0.8.4",
        "20250430_0916_RC00_maas": "0.8.4", "20250417_0916_RC01": "0.8.4",
        "20250407_0917_RC01": "0.8.3", "20250404_0916_RC01": "0.8.1",
        "20250401_0916_RC01": "0.8.1", "20250327_0916_RC01": "0.8.1",
        "20250324_0916_RC01": "0.8.1", "20250321_0916_RC01": "0.8.1",
        "20250304_0916_RC01": "0.7.2", "20250114_0916_RC00_maas": "0.6.4.post1",
        "20241202_0916_RC00_maas": "0.6.4.post1", "20241112_0916_RC00_maas": "0.6.2",
        "20241016_0916_RC00_maas": "0.6.2"}
    past_a_release = {"20250620_0916_RC01": "0.9.1", "20250410_0917_RC01": "0.8.3",
                      "20250405_1205_RC01": "0.8.2", "20250312_0916_RC01": "0.7.3"}
    for tag, vllm in published.items():
        assert releases.IMAGES[tag].vllm == vllm == releases.RELEASES[tag], tag
    for tag, vllm in past_a_release.items():  # built from a commit past a release
        found = releases.IMAGES[tag]
        assert found.vllm is None and found.planned_as == vllm and "commit" in found.note
        assert found.vllm_text.startswith(f"unknown (Google publishes none; planned as {vllm}")
    assert [t for t, r in releases.IMAGES.items() if r.arch == "arm"] == [ARM]
    assert releases.IMAGES[ARM].describe() == f"{ARM} (ARM): vLLM 0.9.2"
    assert releases.RELEASES[releases.DEFAULT_TAG] == "0.9.2"


def test_the_optimized_image_and_the_tags_googles_llama_notebooks_use():
    for tag in (OPTIMIZED, "20250121_0835_RC00"):
        image = releases.image_uri(tag)
        assert image == ("us-docker.pkg.dev/vertex-ai-restricted/vertex-vision-model-garden-"
                         f"dockers/pytorch-vllm-optimized-serve:{tag}")
        assert releases.IMAGES[tag].vllm is None  # Google publishes none for it
    for tag in (OLD_TAG, PREFIX_CACHE_TAG, "20250116_0916_RC00"):
        found = releases.IMAGES[tag]
        assert found.vllm is None and "vertex-ai-samples" in found.source and found.note
        assert releases.image_uri(tag).startswith(releases.IMAGE_REPOSITORY + ":")
    assert releases.IMAGES[PREFIX_CACHE_TAG].describe() == (
        f"{PREFIX_CACHE_TAG}: vLLM unknown (Google publishes none; planned as 0.6.4.post1: the "
        "tags before and after it (20241202, 20250114) are both 0.6.4.post1)")


# --- Google's own flags, per release ----------------------------------------------------------
@pytest.mark.parametrize("extra, tag", [
    ((PREFIX_CACHE,), PREFIX_CACHE_TAG),
    ((PREFIX_CACHE, "--host-prefix-kv-cache-min-len=1024"), "20250116_0916_RC00"),
    (VERTEX_PARSER, "20241202_0916_RC00_maas"),
    (("--model-type=llama3.1",), OLD_TAG),
    ((PREFIX_CACHE, *VERTEX_PARSER, "--model-type=llama3.1"), releases.DEFAULT_TAG),
])
def test_googles_flags_are_taken_by_the_releases_that_have_them(extra, tag):
    plan = _plan(container_tag=tag, options=nbhelpers.VllmOptions(extra_args=extra))
    assert all(arg in plan.container.args for arg in extra)
    assert plan.container.image_uri.endswith(f":{tag}")


@pytest.mark.parametrize("extra, tag, since", [
    ((PREFIX_CACHE,), OLD_TAG, "20241210"),
    (("--host-prefix-kv-cache-min-len=1024",), PREFIX_CACHE_TAG, "20250116"),
    (VERTEX_PARSER, "20241112_0916_RC00_maas", "20241202"),
    (VERTEX_PARSER, OPTIMIZED, "20241202"),
])
def test_googles_flags_are_refused_by_releases_without_them(extra, tag, since):
    with pytest.raises(ConfigError) as refused:
        _plan(container_tag=tag, options=nbhelpers.VllmOptions(extra_args=extra))
    said = str(refused.value)
    assert "would refuse these container arguments" in said and f"({tag})" in said
    assert f"Model Garden images tagged {since} or later" in said
    assert "api_server.py: error:" in said  # vLLM's own argparse line


def test_the_host_prefix_cache_share_must_be_below_one():
    with pytest.raises(ConfigError, match="from 0 \\(off\\) to below 1"):
        _plan(container_tag=PREFIX_CACHE_TAG, options=nbhelpers.VllmOptions(
            extra_args=("--host-prefix-kv-cache-utilization-target=1.0",)))


def test_vision_is_refused_on_a_release_without_it_naming_those_with_it():
    with pytest.raises(ConfigError) as refused:
        _plan("Llama-3.2-11B-Vision-Instruct", container_tag=OPTIMIZED)
    said = str(refused.value)
    assert f"cannot run on container tag {OPTIMIZED}" in said
    assert f"'{OLD_TAG}'" in said and f"'{releases.DEFAULT_TAG}'" in said
    assert OPTIMIZED not in said.partition("Choose one of")[2] and ARM not in said
    assert releases.IMAGES[OLD_TAG].serves_vision and not releases.IMAGES[OPTIMIZED].serves_vision
    # A text model is fine there, and a vision model on a release with mllama plans.
    assert _plan(container_tag=OPTIMIZED).container.image_uri.endswith(OPTIMIZED)
    assert _plan("Llama-3.2-11B-Vision-Instruct", container_tag=OLD_TAG).memory.ok


def test_an_arm_image_is_refused_on_the_x86_machines():
    with pytest.raises(ConfigError, match=f"container tag {ARM} is an ARM image and "
                                          "g2-standard-12 an x86 machine"):
        _plan(container_tag=ARM)


# --- the older Meta model ids -----------------------------------------------------------------
def test_old_meta_ids_are_aliases_of_the_catalogs_models():
    assert len(catalog.ALIASES) == 12  # six Llama 3.1 models, with and without "meta-llama/"
    for alias, name in catalog.ALIASES.items():
        assert alias.removeprefix("meta-llama/") == f"Meta-{name}"
        assert catalog.get_model(alias).name == name
    assert catalog.get_model("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama3.1").name == \
        "Llama-3.1-70B-Instruct"
    with pytest.raises(ConfigError, match="unknown model 'Meta-Llama-3.1-8B' for llama3.2"):
        catalog.get_model("Meta-Llama-3.1-8B", "llama3.2")
    assert _plan("meta-llama/Meta-Llama-3.1-8B-Instruct").model.name == "Llama-3.1-8B-Instruct"


def test_the_runner_takes_an_old_id_as_model(tmp_path):
    validate_config(RunConfig(NOTEBOOKS, tmp_path, matrix=[
        {"MODEL": "meta-llama/Meta-Llama-3.1-8B-Instruct"}]))


def test_reconnect_to_an_endpoint_deployed_under_an_old_id_with_googles_flags(session, emulator):
    """As Google's Llama 3.1 notebook deploys (aiplatform SDK, its tag, its flags, MODEL_ID the
    old id), straight against the emulator; then the suite reconnects and predicts."""
    from google.cloud import aiplatform

    old_id = "meta-llama/Meta-Llama-3.1-8B-Instruct"

    def google_style_deploy(endpoint: aiplatform.Endpoint, tag: str) -> None:
        model = aiplatform.Model.upload(
            display_name="llama3_1-serve", serving_container_image_uri=releases.image_uri(tag),
            serving_container_args=[
                "python", "-m", "vllm.entrypoints.api_server", "--host=0.0.0.0", "--port=8080",
                f"--model={old_id}", "--tensor-parallel-size=1", "--swap-space=16",
                "--max-model-len=8192", "--gpu-memory-utilization=0.95", "--dtype=auto",
                "--max-loras=5", "--max-cpu-loras=8", "--max-num-seqs=256",
                "--disable-log-stats", "--enforce-eager", "--enable-lora",
                "--enable-prefix-caching", PREFIX_CACHE, *VERTEX_PARSER],
            serving_container_ports=[8080], serving_container_predict_route="/generate",
            serving_container_health_route="/ping",
            serving_container_environment_variables={
                "MODEL_ID": old_id, "DEPLOY_SOURCE": "notebook", "HF_TOKEN": FAKE_TOKEN},
            serving_container_shared_memory_size_mb=16 * 1024,
            serving_container_deployment_timeout=7200)
        model.deploy(endpoint=endpoint, machine_type="g2-standard-12",
                     accelerator_type="NVIDIA_L4", accelerator_count=1)

    endpoint = aiplatform.Endpoint.create(display_name="llama3_1-serve-endpoint")
    google_style_deploy(endpoint, PREFIX_CACHE_TAG)
    deployment = nbhelpers.reconnect(session, endpoint.name)
    assert deployment.model_name == "Llama-3.1-8B-Instruct"
    assert deployment.machine_type == "g2-standard-12"
    log = "\n".join(emulator_logs(emulator, endpoint.name))
    assert "KV cache" in log or "GPU blocks" in log, log  # sized: the old id is a catalog model
    assert "not in the nbhelpers catalog" not in log
    reply = nbhelpers.predict(deployment, "What is a car?", max_tokens=8)[0]
    assert "rehearsal engine" in reply.raw
    # The same container on a tag from before the host-memory prefix cache exits at start-up.
    older = aiplatform.Endpoint.create(display_name="llama3_1-serve-endpoint")
    with pytest.raises(Exception, match="Model server exited unexpectedly"):
        google_style_deploy(older, "20241202_0916_RC00_maas")  # the parser, not the cache
    assert f"api_server.py: error: unrecognized arguments: {PREFIX_CACHE}" in \
        emulator_logs(emulator, older.name)


# --- prices -----------------------------------------------------------------------------------
def test_every_rate_names_its_basis_and_is_marked_an_assumption():
    assert set(prices.NODE_RATES) == set(hardware.MACHINE_TYPES)
    rates = [r for r in prices.NODE_RATES.values() if r]
    assert len(rates) == len(hardware.MACHINE_TYPES) - 1  # no figure found for the H200 machine
    for rate in rates:
        assert rate.assumption and "pricing.yml" in rate.source and 0 < rate.spot < rate.on_demand
    assert prices.READ_ON in prices.__doc__ and prices.PRICING_PAGE in prices.__doc__
    assert "ASSUMPTION" in prices.__doc__


def test_prices_are_the_catalogs_figures():
    # Read from CATALOG (us-central1 hour and hour_spot), as the table cites them.
    read = {"a2-highgpu-1g": (3.673385, 1.293355), "a2-highgpu-8g": (29.38708, 10.34684),
            "a3-highgpu-1g": (11.0612499878219, 4.42446871232877),
            "a3-highgpu-8g": (88.4899999025753, 35.3957496986301),
            "g2-standard-24": (2.000832574, 0.787192), "g2-standard-32": (1.734376367, 0.677756)}
    for machine, (hour, spot) in read.items():
        assert prices.estimate(machine).usd_per_hour == hour
        assert prices.estimate(machine, spot=True).usd_per_hour == spot
    # The G2 fit (an L4 plus a rate per vCPU, from -12 and -16) gives -24 and -32 as read.
    for machine in ("g2-standard-24", "g2-standard-32"):
        vcpus, gpus = hardware.MACHINE_SHAPES[machine][0], hardware.MACHINE_TYPES[machine][1]
        assert prices._g2(vcpus, gpus).on_demand == pytest.approx(read[machine][0], abs=1e-9)
        assert prices._g2(vcpus, gpus).spot == pytest.approx(read[machine][1], abs=1e-9)
    assert prices.estimate("a3-highgpu-4g").usd_per_hour == pytest.approx(
        2 * read["a3-highgpu-1g"][0] * 2)


def test_an_estimate_counts_machine_gpus_replicas_spot_and_region():
    one = prices.estimate("a3-highgpu-4g")
    assert one.accelerator_count == 4 and one.known
    three = prices.estimate("a3-highgpu-4g", replicas=3)
    assert three.usd_per_hour == pytest.approx(3 * (one.usd_per_hour or 0))
    assert "3 x a3-highgpu-4g (4 x H100 80GB)" in three.describe() and "per node" in \
        three.describe()
    for machine in ("g2-standard-12", "a2-highgpu-1g", "a2-ultragpu-1g", "a3-highgpu-8g"):
        on_demand, spot = prices.estimate(machine), prices.estimate(machine, spot=True)
        assert 0 < (spot.usd_per_hour or 0) < (on_demand.usd_per_hour or 0)
        assert " Spot in us-central1" in spot.describe()
    ladder = [prices.estimate(m).usd_per_hour or 0 for m in (
        "g2-standard-8", "g2-standard-12", "g2-standard-24", "a2-highgpu-1g", "a3-highgpu-1g",
        "a3-highgpu-4g", "a3-highgpu-8g")]
    assert ladder == sorted(ladder)
    elsewhere = prices.estimate("g2-standard-12", region="europe-west4")
    assert "priced with us-central1 rates: the table has none for europe-west4" in \
        elsewhere.describe()
    h200 = prices.estimate("a3-ultragpu-8g")
    assert not h200.known and h200.headline() == "unknown"
    assert "no price found for a3-ultragpu-8g (8 x NVIDIA_H200_141GB" in h200.describe()
    with pytest.raises(ConfigError, match="replicas must be a whole number from 1"):
        prices.estimate("g2-standard-12", replicas=0)


def test_every_plan_shows_its_price():
    plan = _plan()
    assert plan.price.machine_type == "g2-standard-12" and plan.price.known
    assert f"price:      {plan.price.describe()}" in plan.describe()
    assert plan.price.headline() == f"${plan.price.usd_per_hour:,.2f}/hour (estimate)"
    limited = _plan(max_hourly_cost=5.0)
    assert "(limit $5.00/hour)" in limited.describe() and limited.max_hourly_cost == 5.0
    assert _plan(max_hourly_cost=0).max_hourly_cost is None  # 0: no limit


def test_a_plan_above_max_hourly_cost_is_refused_with_cheaper_choices(session, emulator):
    with pytest.raises(ConfigError) as refused:
        _plan("Llama-3.1-70B-Instruct", max_hourly_cost=20.0)
    said = str(refused.value)
    price = prices.estimate("a3-highgpu-4g").usd_per_hour
    assert f"costs about ${price:,.2f}/hour" in said and "above MAX_HOURLY_COST $20.00" in said
    cheaper = said.partition("predicts it starts:")[2]
    assert "MACHINE_TYPE = 'g2-standard-96'" in cheaper  # 8 x L4, as the seed tutorial
    for line in cheaper.splitlines()[1:]:
        if line.startswith("  - MACHINE_TYPE"):
            assert float(line.rpartition("$")[2].split("/")[0]) <= 20.0
    with pytest.raises(ConfigError, match=r"\$0.50/hour. Choices .*\n  - spot = True on "
                                          r"g2-standard-12 \(about \$0.39/hour;"):
        _plan(max_hourly_cost=0.5)  # only Spot VMs are within it
    with pytest.raises(ConfigError, match="none of the machine types fits this model"):
        _plan(max_hourly_cost=0.3)
    with pytest.raises(ConfigError, match="has no price .* cannot be held to MAX_HOURLY_COST"):
        _plan(machine_type="a3-ultragpu-8g", max_hourly_cost=500.0)
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(ConfigError, match="max_hourly_cost must be a finite number above 0"):
            _plan(max_hourly_cost=bad)
    _nothing_created(emulator)


# --- the runner and the notebooks -------------------------------------------------------------
def test_the_runner_checks_the_new_parameters_types(tmp_path):
    """The runner checks types (values are the plan cell's, before anything is created)."""
    validate_config(RunConfig(NOTEBOOKS, tmp_path, parameters={
        "CONTAINER_TAG": PREFIX_CACHE_TAG, "MAX_HOURLY_COST": 12.5}))
    with pytest.raises(ConfigError, match="MAX_HOURLY_COST = 0.0, so it takes a number"):
        validate_config(RunConfig(NOTEBOOKS, tmp_path, parameters={"MAX_HOURLY_COST": "cheap"}))


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook, parameters, message", [
    ("02_deploy_llama32_multimodal.ipynb", {"CONTAINER_TAG": OPTIMIZED, "MAX_HOURLY_COST": 9.0},
     f"cannot run on container tag {OPTIMIZED}"),
    # The plan passes (within the limit); reconnecting to an endpoint that is not there fails.
    ("01_deploy_llama31_text.ipynb", {"ENDPOINT_ID": "4242", "MAX_HOURLY_COST": 5.0,
                                      "MAX_REPLICAS": 2, "SPOT": True,
                                      "AUTOSCALE_GPU_DUTY_CYCLE": 70},
     "endpoint '4242' not found"),
])
def test_the_deploy_notebooks_price_the_plan_and_stop_above_the_limit(
        tmp_path, emulator, notebook, parameters, message):
    results = run_suite(NOTEBOOKS, tmp_path, notebooks=(notebook,), parameters=parameters,
                        run_id="priced", environment={"NBHELPERS_EMULATOR_URL": emulator.url,
                                                      "HF_TOKEN": FAKE_TOKEN})
    failed = [r for r in results if not r.ok]
    assert failed and message in failed[0].error, [r.error for r in results]
    if "ENDPOINT_ID" in parameters:  # the plan cell ran: the runner's report has the price
        price = prices.estimate("g2-standard-12", replicas=2, spot=True)
        assert failed[0].results["hourly_cost"] == price.headline()
        shown = _outputs(failed[0].output)
        assert f"price:      about ${price.usd_per_hour:,.2f}/hour for 2 x g2-standard-12" in shown
        assert "replicas:   1 to 2 replicas on Spot VMs (may be taken back at any time), " \
            "autoscaling on gpu_duty_cycle 70" in shown
        assert "(limit $5.00/hour)" in shown and "release:    20250710_0916_RC01: vLLM 0.9.2" \
            in shown
    _nothing_created(emulator)


def test_the_runners_report_shows_the_price(tmp_path):
    from nbhelpers.runner import NotebookRun, _results_text

    run = NotebookRun(notebook="01_deploy_llama31_text.ipynb", run_id="r", entry="",
                      parameters={}, output=tmp_path / "01.ipynb", status="passed",
                      results={"hourly_cost": "$1.00/hour (estimate)", "endpoint_id": "7"})
    assert _results_text(run) == "hourly_cost=$1.00/hour (estimate); endpoint_id=7"


# --- replicas, Spot and autoscaling (#17 item 2) ----------------------------------------------
def test_scaling_is_priced_at_its_most_replicas_and_checked():
    scaling = nbhelpers.Scaling(min_replicas=1, max_replicas=3, spot=True,
                                targets={"gpu_duty_cycle": 60})
    plan = _plan(scaling=scaling)
    spot_node = prices.estimate("g2-standard-12", spot=True).usd_per_hour
    assert plan.price.replicas == 3 and plan.price.spot
    assert plan.price.usd_per_hour == pytest.approx(3 * (spot_node or 0))
    assert "replicas:   1 to 3 replicas on Spot VMs" in plan.describe()
    with pytest.raises(ConfigError) as refused:
        _plan(scaling=nbhelpers.Scaling(min_replicas=2, max_replicas=6), max_hourly_cost=3.5)
    said = str(refused.value)
    assert "6 x g2-standard-12" in said and "max_replicas = 3 on g2-standard-12" in said
    assert "spot = True on g2-standard-12" in said
    for bad, message in [
            ({"min_replicas": 0}, "min_replicas must be a whole number from 1"),
            ({"min_replicas": 3, "max_replicas": 2}, "max_replicas must be a whole number from 3"),
            ({"spot": 1}, "spot must be True or False"),
            ({"targets": {"cpu": 50}}, "autoscaling target must be one of 'gpu_duty_cycle'"),
            ({"targets": {"vllm_kv_cache_usage": 0}}, "must be a whole number from 1 to 100")]:
        with pytest.raises(ConfigError, match=message):
            _plan(scaling=nbhelpers.Scaling(**bad))


def test_a_deployment_with_a_replica_range_spot_and_autoscaling_records_its_spec(
        session, emulator):
    from google.cloud import aiplatform

    targets = {"gpu_duty_cycle": 60, "requests_per_minute": 600, "vllm_kv_cache_usage": 80,
               "vllm_requests_waiting": 5}
    plan = _plan(scaling=nbhelpers.Scaling(min_replicas=1, max_replicas=3, spot=True,
                                           targets=targets))
    deployment = nbhelpers.deploy(session, plan)
    served = aiplatform.Endpoint(deployment.endpoint_name).gca_resource.deployed_models[0]
    resources = served.dedicated_resources
    assert (resources.min_replica_count, resources.max_replica_count, resources.spot) == \
        (1, 3, True)
    specs = {spec.metric_name: spec.target for spec in resources.autoscaling_metric_specs}
    assert specs == {
        "aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle": 60,
        "aiplatform.googleapis.com/prediction/online/request_count": 600,
        "prometheus.googleapis.com/vertex_vllm_gpu_cache_usage_perc": 80,
        "prometheus.googleapis.com/vertex_vllm_num_requests_waiting": 5,
    }
    assert served.dedicated_resources.machine_spec.accelerator_count == 1


def test_the_quota_check_counts_the_most_replicas_and_spots_own_quota(session, emulator):
    import json
    import urllib.request

    from nbhelpers.quota import quota_id

    assert quota_id("NVIDIA_L4", spot=True) == \
        "CustomModelServingPreemptibleL4GPUsPerProjectPerRegion"
    request = urllib.request.Request(
        f"{emulator.url}/emulator/quota",
        json.dumps({"quota_id": quota_id("NVIDIA_L4"), "region": "us-central1",
                    "value": 2}).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(request).close()
    with pytest.raises(ConfigError, match="limit 2, in use 0, this deployment needs 3"):
        nbhelpers.deploy(session, _plan(scaling=nbhelpers.Scaling(max_replicas=3)))
    _nothing_created(emulator)
