import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from perf import baselines, guards, inject, optimizations, options, pipelines, runner, stages, timing


@pytest.fixture(scope="module")
def tiny():
    return pipelines.build("tiny", "cpu")


def generate(pipe, steps=2, size=32):
    return pipe(pipelines.PROMPT, num_inference_steps=steps, height=size, width=size,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np").images


def test_tokenizer_pads_to_77():
    ids = pipelines.build_tokenizer()(pipelines.PROMPT, padding="max_length", max_length=77).input_ids
    assert len(ids) == 77


def test_tiny_is_seeded_and_passes_the_guard(tiny):
    first, second = generate(tiny), generate(tiny)
    np.testing.assert_array_equal(first, second)
    guards.check_images(first, "fp32")
    again = pipelines.build("tiny", "cpu")
    assert torch.equal(next(again.unet.parameters()), next(tiny.unet.parameters()))


def test_sd15_architecture_matches_the_guide():
    spec = pipelines.SPECS["sd15"]
    assert spec.unet["block_out_channels"] == (320, 640, 1280, 1280)
    assert spec.vae["block_out_channels"] == (128, 256, 512, 512)
    assert (spec.steps, spec.size, spec.vae_scale_factor) == (50, 512, 8)
    with torch.device("meta"):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel(**spec.unet)
    assert 855e6 < sum(p.numel() for p in unet.parameters()) < 865e6


@pytest.mark.parametrize("image, stat", [
    (np.full((1, 8, 8, 3), np.nan), "holds NaN"),
    (np.full((1, 8, 8, 3), np.inf), "holds inf"),
    (np.zeros((1, 8, 8, 3)), "is black"),
    (np.full((1, 8, 8, 3), 0.5), "one flat colour"),
])
def test_guard_names_stage_and_statistic(image, stat):
    with pytest.raises(guards.GuardError, match=stat) as err:
        guards.check_images(image, "fp16")
    assert "stage 'fp16'" in str(err.value)


def test_traced_unet_keeps_what_pipelines_read():
    pipe = pipelines.build("tiny", "cpu")
    recipe = stages.Recipe(trace_unet=True)
    pipe = optimizations.apply(pipe, recipe, torch.device("cpu"), batch=1, size=32)
    assert isinstance(pipe.unet, optimizations.TracedUNet)
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"
    assert pipe.unet.config.in_channels == 4
    guards.check_images(generate(pipe), "traced_unet")


def test_slowdown_injection_survives_tracing():
    pipe = pipelines.build("tiny", "cpu")
    recipe = stages.Recipe(trace_unet=True)
    pipe = optimizations.apply(pipe, recipe, torch.device("cpu"), batch=1, size=32,
                               before_capture=lambda p: inject.slow_down_unet(p, 0.05))
    assert "diffusers_perf::spin" in str(pipe.unet.traced.inlined_graph)


def test_from_pretrained_round_trip(tmp_path):
    pipelines.build("tiny", "cpu").save_pretrained(tmp_path, safe_serialization=True)
    folder = pipelines.resolve_model(str(tmp_path))
    pipe = pipelines.load(folder, "cpu")
    assert pipe.safety_checker is None if hasattr(pipe, "safety_checker") else True
    guards.check_images(generate(pipe), "fp32")
    assert pipelines.model_sample_size(folder) == 64


def _plans(extra, median=1.0):
    return {"cudagraphs": baselines.StagePlan("cudagraphs", entry={"stats": {"median": median}, "extra_info": extra})}


@pytest.mark.parametrize("extra, seconds", [
    ({"seconds_per_step": 0.0097, "gpu_seconds_per_step": 0.00686}, 0.05 * 0.00686),  # 5 % more GPU work
    ({"seconds_per_step": 0.0097}, 0.05 * 0.0097),  # an older baseline: wall time per step
])
def test_injection_is_sized_from_the_baselines_gpu_time(extra, seconds):
    settings = dataclasses.replace(_settings(), faults={"inject_slowdown": 0.05})
    assert inject.seconds_per_unet_call(runner.Runner(settings, _plans(extra)), "cudagraphs") == pytest.approx(seconds)
    assert inject.seconds_per_unet_call(runner.Runner(settings, None), "cudagraphs") == 0.0


def _settings():
    return options.Settings(pipeline="sd15", model=None, stages=["cudagraphs"], steps=50, size=512, batch=1,
                            budget=timing.Budget(None, 6, 20, 15.0), report=Path("r.md"), count_flops=False)


def test_building_a_pipeline_leaves_no_temporary_files(tmp_path, monkeypatch):
    import tempfile

    from perf import pipelines

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tokenizer = pipelines.build_tokenizer()
    assert tokenizer("a photo of an astronaut")["input_ids"][0] == tokenizer.bos_token_id
    assert list(tmp_path.iterdir()) == []


def test_sdxl_and_flux_are_the_published_architectures():
    sdxl, flux = pipelines.SPECS["sdxl"], pipelines.SPECS["flux"]
    assert sdxl.unet["transformer_layers_per_block"] == (1, 2, 10) and sdxl.unet["addition_embed_type"] == "text_time"
    assert sdxl.text_encoder["hidden_size"] == 768 and sdxl.text_encoder_2["hidden_size"] == 1280  # CLIP-L, bigG
    assert (sdxl.size, sdxl.vae["force_upcast"]) == (1024, True)
    t = flux.transformer
    assert (t["num_layers"], t["num_single_layers"], t["num_attention_heads"] * t["attention_head_dim"]) == (19, 38, 3072)
    assert flux.text_encoder_2["d_model"] == 4096 and flux.vae["latent_channels"] == 16 and t["guidance_embeds"]
    assert (flux.family, flux.size_multiple, flux.size) == ("dit", 16, 1024)


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-flux"])
def test_tiny_variants_use_the_same_classes(name):
    full, tiny = pipelines.SPECS[name.removeprefix("tiny-")], pipelines.SPECS[name]
    assert full.family == tiny.family
    pipe = pipelines.build(name, "cpu")
    assert type(pipe).__name__ == {"tiny-sdxl": "StableDiffusionXLPipeline", "tiny-flux": "FluxPipeline"}[name]
    if name == "tiny-flux":
        assert type(pipe.transformer).__name__ == "FluxTransformer2DModel"
        assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
        assert pipe.tokenizer_2("a photo", padding="max_length", max_length=16).input_ids[-1] == 0  # T5 pads
    else:
        assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"


@pytest.mark.parametrize("force_upcast", [True, False])
def test_a_lost_sdxl_vae_upcast_is_caught_by_the_guard(force_upcast):
    """SDXL's VAE overflows float16 (``force_upcast`` in its config makes the pipeline decode in
    float32). Forced here: decoder activations scaled past float16's 65504. With the upcast the
    image is fine; with it lost the decode overflows to inf/NaN, and the guard fails the stage."""
    pipe = pipelines.build("tiny-sdxl", "cpu")
    pipe = optimizations.apply(pipe, stages.recipe("fp16", "sdxl"), torch.device("cpu"), batch=1, size=32)
    with torch.no_grad():
        pipe.vae.decoder.conv_in.weight.mul_(1e5)
    pipe.vae.register_to_config(force_upcast=force_upcast)
    images = pipe(pipelines.PROMPT, num_inference_steps=2, height=32, width=32, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    if force_upcast:
        guards.check_images(images, "fp16")
    else:
        with pytest.raises(guards.GuardError, match=r"stage 'fp16': image 0 .*NaN"):
            guards.check_images(images, "fp16")


def test_host_timesteps_keep_the_images_and_give_the_unet_device_copies():
    """``sync_free``: the scheduler steps on host timesteps (no sync), the UNet gets a copy of each
    on the device, made once per generation; the images are bit for bit the parent's."""
    images = []
    for host in (False, True):
        pipe = optimizations.apply(pipelines.build("tiny", "cpu"), stages.Recipe(host_timesteps=host), torch.device("cpu"),
                                   batch=1, size=32)
        seen = []
        pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[1]), with_kwargs=True)
        generator = torch.Generator("cpu").manual_seed(0)
        images.append(pipe(pipelines.PROMPT, num_inference_steps=3, height=32, width=32, generator=generator,
                           output_type="np").images)
        assert [int(t) for t in seen] == [int(t) for t in pipe.scheduler.timesteps]
    assert np.array_equal(*images)
    # The device the pipeline asks for reaches the UNet only: "meta" stands for a GPU here.
    pipe.scheduler.set_timesteps(3, device="meta")
    assert pipe.scheduler.timesteps.device.type == "cpu"
    timestep = pipe.scheduler.timesteps[0]
    hook = next(iter(pipe.unet._forward_pre_hooks.values()))  # the recipe's, registered first
    args, _ = hook(pipe.unet, (torch.zeros(1), timestep), {})
    assert args[1].device.type == "meta" and timestep.device.type == "cpu"

