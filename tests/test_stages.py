import dataclasses
import json
from pathlib import Path

import pytest

from perf import pipelines, requirements, stages
from perf.settings import Settings
from perf.timing import Budget


def test_ladder_follows_the_guide():
    assert stages.names()[:5] == ["fp32", "tf32", "fp16", "channels_last", "traced_unet"]
    for required in ("sdpa", "xformers", "bf16", "fused_qkv", "compile", "cudagraphs"):
        assert required in stages.names()


def test_recipes_inherit_from_parents():
    fp32 = stages.recipe("fp32")
    assert (fp32.dtype, fp32.tf32, fp32.attention, fp32.channels_last) == ("float32", False, "classic", False)
    traced = stages.recipe("traced_unet")
    assert (traced.dtype, traced.tf32, traced.channels_last, traced.trace_unet) == ("float16", True, True, True)
    assert traced.attention == "classic"
    bf16 = stages.recipe("bf16")
    assert (bf16.dtype, bf16.attention, bf16.trace_unet) == ("bfloat16", "sdpa", False)
    graphs = stages.recipe("cudagraphs")
    assert graphs.compile["mode"] == "reduce-overhead" and graphs.dtype == "float16"


def test_requirements_are_not_inherited():
    assert stages.recipe("fp16").requires == ()  # tf32's "cuda" stays with tf32
    assert "cuda" in stages.recipe("cudagraphs").requires


def test_parse_selects_in_ladder_order():
    assert stages.parse("sdpa,fp32") == ["fp32", "sdpa"]
    assert stages.parse("all") == [name for name in stages.names() if name not in stages.opted_out()]


def test_all_leaves_out_the_opt_in_stages_which_run_where_named():
    # frontier_autotune's first compile ran 8 min 48 s on an H200 unfinished: a full ladder's one command has no room
    assert "frontier_autotune" in stages.opted_out("dit")
    assert "frontier_autotune" not in stages.parse("all", "dit")
    assert "frontier_autotune" not in stages.parse(None, "dit")
    assert stages.parse("all,frontier_autotune", "dit") == stages.parse("all", "dit") + ["frontier_autotune"]
    assert stages.parse("frontier_autotune", "dit") == ["frontier_autotune"]
    assert stages.parse(" ", "dit") == stages.parse("all", "dit")


def test_a_whole_ladder_says_which_opt_in_stage_it_left_out(suite):
    whole = suite.run("--perf-pipeline=tiny-flux", "--collect-only").stdout.str()
    assert "opt-in stage frontier_autotune not selected (its first compile on Flux ran 8 min 48 s" in whole
    assert "run it with --perf-stages=all,frontier_autotune" in whole
    named = suite.run("--perf-pipeline=tiny-flux", "--perf-stages=all,frontier_autotune", "--collect-only")
    assert "opt-in stage" not in named.stdout.str() and "test_generate[frontier_autotune]" in named.stdout.str()
    subset = suite.run("--perf-pipeline=tiny-flux", "--perf-stages=bf16", "--collect-only").stdout.str()
    assert "opt-in stage" not in subset  # a subset was chosen: nothing to say about the rest


def test_parse_names_the_valid_stages():
    with pytest.raises(ValueError) as err:
        stages.parse("fp32,nope")
    assert "'nope'" in str(err.value) and "cudagraphs" in str(err.value)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the skip reasons of a machine without CUDA")
def test_skip_reasons_without_cuda():
    assert "needs CUDA" in requirements.skip_reason(stages.recipe("cudagraphs"))
    for name in ("fp16", "channels_last", "traced_unet", "sdpa", "fused_qkv", "compile"):
        assert requirements.skip_reason(stages.recipe(name)) is None, name  # every recipe runs on CPU
    assert requirements.skip_reason(stages.recipe("fp32")) is None
    assert requirements.skip_reason(stages.recipe("bf16")) is None


def test_each_family_has_its_ladder_in_the_one_registry():
    assert stages.names("dit") == ["bf16", "fused_qkv", "compile", "cudagraphs", "compile_vae", "frontier",
                                   "cudnn_attention", "flash_attention_3", "int8", "fp8", "frontier_fp8", "frontier_autotune"]
    assert "frontier_int8" in stages.names("sdxl") and "frontier_int8" not in stages.names("dit")
    assert "traced_unet" not in stages.names("sdxl") and "channels_last" in stages.names("sdxl")
    # SD 1.5: the whole guide; float8 on its frontier is declared for larger denoisers only
    assert set(stages.names()) - set(stages.names("sd")) == {"frontier_fp8", "frontier_int8", "flash_attention_3",
                                                               "frontier_autotune"}
    root = stages.recipe("bf16", "dit")  # Flux's root: bfloat16, its own SDPA attention, nothing else
    assert (root.dtype, root.attention, root.channels_last, root.fuse_qkv, root.compile) == \
        ("bfloat16", "sdpa", False, False, None)
    graphs = stages.recipe("cudagraphs", "dit")
    assert graphs.dtype == "bfloat16" and not graphs.channels_last and graphs.compile["mode"] == "reduce-overhead"
    assert stages.recipe("cudagraphs", "sd").dtype == "float16"  # the UNet ladder is unchanged
    assert [s.name for s in stages.lineage("fused_qkv", "dit")] == ["bf16", "fused_qkv"]


def test_the_full_recipes_add_the_vae_and_fused_qkv_to_cuda_graphs():
    frontier = stages.recipe("frontier", "dit")
    assert [s.name for s in stages.lineage("frontier", "dit")] == ["bf16", "cudagraphs", "compile_vae", "frontier"]
    assert frontier.fuse_qkv and frontier.compile["mode"] == "reduce-overhead"
    assert frontier.compile_vae == {"mode": "reduce-overhead", "fullgraph": True}
    assert stages.recipe("cudagraphs").compile_vae is None and stages.recipe("int8").compile_vae is None
    assert stages.min_psnr("frontier", "sd", "sd15") == stages.min_psnr("fp16", "sd", "sd15")  # fp16's numerics


def test_cudnn_attention_builds_on_each_familys_best_stage_and_restores_sdpas_order():
    from perf import optimizations

    assert [stages.parent("cudnn_attention", family) for family in stages.FAMILIES] == ["sync_free", "frontier", "frontier"]
    recipe = stages.recipe("cudnn_attention")
    assert recipe.attention == "cudnn" and recipe.host_timesteps and recipe.compile_vae is not None
    assert stages.min_psnr("cudnn_attention", "sd", "sd15") == stages.min_psnr("fp16", "sd", "sd15")
    torch = __import__("torch")
    default = torch._C._get_sdp_priority_order()
    with optimizations.process_flags(recipe):
        assert torch._C._get_sdp_priority_order()[0] == int(torch.nn.attention.SDPBackend.CUDNN_ATTENTION)
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.compiler.config.cache_key_tag.startswith("diffusers-perf sdpa priority ")
    assert torch._C._get_sdp_priority_order() == default and not torch.backends.cuda.matmul.allow_tf32
    assert torch.compiler.config.cache_key_tag == ""
    with optimizations.process_flags(stages.recipe("sync_free")):
        assert torch.compiler.config.cache_key_tag == ""  # the other stages keep their compile caches
    if not torch.cuda.is_available():
        assert requirements.skip_reason(recipe).startswith("needs CUDA")


def test_compile_text_encoder_graphs_the_text_encoder_of_sd_alone(monkeypatch):
    from perf import gate

    assert stages.parent("compile_text_encoder", "sd") == "cudnn_attention"
    text = stages.recipe("compile_text_encoder")
    assert text.compile_text_encoder == {"mode": "reduce-overhead", "fullgraph": True} and text.attention == "cudnn"
    assert stages.recipe("cudnn_attention").compile_text_encoder is None
    assert "pooled embedding" in stages.not_applicable("compile_text_encoder", "sdxl")
    assert "compile_text_encoder" not in stages.names("dit")
    # CUDA graphs asked for through Inductor's options are graph stages for the gate, as the mode is
    monkeypatch.setattr(stages, "STAGES", stages.STAGES)
    monkeypatch.setattr(stages, "BY_NAME", dict(stages.BY_NAME))
    stages.register(stages.Stage("graphs_by_option", "cudnn_attention", "CUDA graphs through options",
                                 compile={"fullgraph": True, "options": {"triton.cudagraphs": True}}))
    assert gate.replays_graphs("graphs_by_option") and gate.replays_graphs("compile_text_encoder")
    assert not gate.replays_graphs("compile")


def test_a_stage_that_asks_for_cudnns_algorithm_search_sets_it_for_itself_alone(monkeypatch):
    """No built-in stage sets it (it bought nothing on sd15's best H200 stage); a plugin's may."""
    from perf import optimizations

    torch = __import__("torch")
    monkeypatch.setattr(stages, "STAGES", stages.STAGES)
    monkeypatch.setattr(stages, "BY_NAME", dict(stages.BY_NAME))
    stages.register(stages.Stage("searched", "cudagraphs", "cuDNN's algorithm search", cudnn_benchmark=True))
    assert stages.recipe("searched").cudnn_benchmark and not stages.recipe("cudagraphs").cudnn_benchmark
    assert not any(stages.recipe(name).cudnn_benchmark for name in stages.BUILT_IN)
    assert not torch.backends.cudnn.benchmark
    with optimizations.process_flags(stages.recipe("searched")):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark


def test_frontier_fp8_adds_float8_to_the_frontier_of_sdxl_and_dits():
    lineage = [s.name for s in stages.lineage("frontier_fp8", "dit")]
    assert lineage == ["bf16", "cudagraphs", "compile_vae", "frontier", "frontier_fp8"]
    recipe = stages.recipe("frontier_fp8", "sdxl")
    assert (recipe.dtype, recipe.quantize, recipe.fuse_qkv, recipe.channels_last) == ("bfloat16", "fp8", True, True)
    assert recipe.compile["mode"] == "reduce-overhead" and recipe.compile_vae is not None
    assert "frontier_fp8" not in stages.names("sd")
    assert stages.min_psnr("frontier_fp8", "dit", "flux") == 35.5  # its own numerics, measured on the H200
    assert stages.min_psnr("frontier_fp8", "sdxl", "sdxl") == 43.4  # 46.4 dB twice on the H200 (0017_h200)


def test_frontier_int8_is_diffusion_fast_s_int8_on_the_sdxl_frontier():
    from perf import gate

    lineage = [s.name for s in stages.lineage("frontier_int8", "sdxl")]
    assert lineage[-3:] == ["compile_vae", "frontier", "frontier_int8"]
    recipe = stages.recipe("frontier_int8", "sdxl")
    assert (recipe.dtype, recipe.quantize, recipe.quantize_filter, recipe.fuse_qkv) == \
        ("float16", "int8", "diffusion_fast", True)
    assert recipe.compile["options"] == {"triton.cudagraphs": True, "force_fuse_int_mm_with_mul": True}
    assert gate.replays_graphs("frontier_int8")  # judged as the graph stage it is
    assert stages.recipe("int8").quantize_filter == "token_wise"  # the other quantized stages are unchanged
    assert "SDXL's UNet" in stages.not_applicable("frontier_int8", "sd")
    # its own numerics: its own floor (66.0 dB on two H200s), not frontier's float16 one
    assert stages.min_psnr("frontier_int8", "sdxl", "sdxl") == 63.0
    assert stages.min_psnr("frontier_int8", "sdxl", "sdxl", device="cpu") is None


def test_diffusion_fast_s_filter_quantizes_only_sdxl_s_large_token_wise_linears():
    """The filter keeps what diffusion-fast measured faster in int8; read on SDXL's own UNet, fused
    as on the frontier, built on the meta device (no memory, no weights)."""
    import collections

    import torch
    from diffusers import UNet2DConditionModel

    from perf import optimizations

    with torch.device("meta"):
        unet = UNet2DConditionModel(**pipelines.SPECS["sdxl"].unet)
    unet.fuse_qkv_projections()
    kept, token_wise = collections.Counter(), 0
    for name, module in unet.named_modules():
        token_wise += optimizations.QUANTIZE_FILTERS["token_wise"](module, name)
        if optimizations.QUANTIZE_FILTERS["diffusion_fast"](module, name):
            kept[module.in_features, module.out_features] += 1
    # Fused self-attention QKV, the feed-forward, and the 640-channel blocks' unfused cross-attention
    # key and value (kept by the filter; the fused processor calls to_kv, so they never run).
    assert kept == {(640, 1920): 10, (1280, 3840): 60, (1280, 10240): 60, (5120, 1280): 60, (2560, 640): 10,
                    (2048, 640): 20}
    assert sum(kept.values()) < token_wise / 3  # of 862 token-wise linears: most are at most 1280 a side
    assert not kept.keys() & optimizations.DIFFUSION_FAST_SKIPPED


def test_quantize_takes_the_linears_its_filter_names_and_refuses_an_unknown_one():
    import torch

    from perf import optimizations

    if requirements.skip_reason(stages.recipe("int8")):
        pytest.skip(requirements.skip_reason(stages.recipe("int8")))
    model = torch.nn.Sequential(torch.nn.Linear(640, 640), torch.nn.Linear(640, 2560), torch.nn.Linear(640, 5120))
    optimizations.quantize(model, "int8", "diffusion_fast")
    assert [type(layer.weight) is torch.nn.Parameter for layer in model] == [True, False, True]
    with pytest.raises(ValueError, match="unknown quantize_filter 'nope': token_wise, diffusion_fast"):
        optimizations.quantize(model, "int8", "nope")


@pytest.mark.slow
def test_a_compile_under_another_sdpa_state_never_reuses_the_cached_graph(tmp_path, monkeypatch):
    """Why ``cudnn_attention`` keys its compiles: PyTorch's compile caches do not hash SDPA's state.
    On CPU the priority order does not move SDPA's choice, its backend flags do: the same cache."""
    import contextlib

    from perf import optimizations

    torch = __import__("torch")
    from torch._inductor.utils import run_and_get_code
    from torch.nn.attention import SDPBackend, sdpa_kernel

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    query = torch.randn(1, 2, 16, 8)

    def attention(q):
        return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    def lowered(*contexts) -> bool:  # whether the compiled code calls the fused (flash) kernel
        torch._dynamo.reset()
        with contextlib.ExitStack() as stack:
            for context in contexts:
                stack.enter_context(context)
            _, code = run_and_get_code(torch.compile(attention, fullgraph=True), query)
        return "flash_attention" in " ".join(code)

    assert lowered()  # the fused kernel, by default
    assert lowered(sdpa_kernel([SDPBackend.MATH]))  # the cache serves the fused graph: the flags are not hashed
    assert not lowered(sdpa_kernel([SDPBackend.MATH]), optimizations.compile_cache_key("math only"))
    torch._dynamo.reset()


def test_a_stage_named_for_a_family_it_does_not_fit_says_why():
    assert stages.parse("channels_last,bf16", "dit") == ["channels_last", "bf16"]  # kept, to skip with the reason
    assert "UNet" in stages.not_applicable("channels_last", "dit")
    assert "added conditioning" in stages.not_applicable("traced_unet", "sdxl")
    assert stages.not_applicable("compile", "dit") is None


def test_quantized_stages_quantize_the_compiled_denoiser():
    int8 = stages.recipe("int8")
    assert int8.quantize == "int8" and int8.compile == {"fullgraph": True} and int8.dtype == "float16"
    assert int8.requires == ("compile", "torchao")
    fp8 = stages.recipe("fp8", "dit")
    assert fp8.quantize == "fp8" and fp8.dtype == "bfloat16" and "fp8" in fp8.requires
    assert stages.recipe("compile").quantize is None  # the stages above are unchanged


def test_a_stage_that_changes_numerics_brings_its_own_quality_floor():
    assert stages.min_psnr("int8", "sd", "tiny") == stages.MIN_PSNR["int8"]["tiny"]  # its own, not compile's
    assert stages.min_psnr("int8", "dit", "flux") == 36.4  # measured on the H200 (0024_h200)
    assert stages.min_psnr("fp8", "dit", "tiny-flux") is None  # changes dtype: none where not measured
    assert stages.min_psnr("int8", "sdxl", "sdxl") == 58.3  # measured on the H200 (0020_h200)
    assert stages.min_psnr("fp8", "sd", "tiny") is None  # changes dtype, never measured (no fp8 on CPU)
    assert stages.min_psnr("compile", "sd", "tiny") == stages.MIN_PSNR["fp16"]["tiny"]  # keeps fp16's numerics


def test_missing_flash_attention_3_is_a_skip_reason_a_user_can_act_on(monkeypatch):
    import diffusers.utils

    monkeypatch.setattr(requirements, "_cuda", lambda: None)  # as if on CUDA
    monkeypatch.setattr(diffusers.utils, "is_flash_attn_3_available", lambda: False)
    requirements._flash_attention_3.cache_clear()
    try:
        reason = requirements.CHECKS["flash_attention_3"]()
    finally:
        requirements._flash_attention_3.cache_clear()
    assert reason.startswith("FlashAttention 3 is not installed: Diffusers' _flash_3 attention backend needs the "
                             "flash_attn_3 package, which has no wheel for torch ")
    assert stages.not_applicable("flash_attention_3", "sd").startswith("not for sd pipelines: it sets the "
                                                                                 "backend of Diffusers' attention")


def test_flash_attention_3_sets_the_backend_on_its_own_model_only(monkeypatch):
    """Diffusers' set_attention_backend also makes the backend the process's active one; the stage
    puts that back, or every DiT built after it in the run would run FlashAttention 3 too."""
    from diffusers.models import attention_dispatch

    from perf import optimizations

    monkeypatch.setattr(attention_dispatch, "_CAN_USE_FLASH_ATTN_3", True)  # the package, as if installed
    active = attention_dispatch._AttentionBackendRegistry._active_backend
    pipe = pipelines.build("tiny-flux", "cpu")
    optimizations._set_attention(pipe, stages.recipe("flash_attention_3", "dit").attention)
    transformer = pipe.transformer
    backends = {getattr(module.processor, "_attention_backend", None) for module in transformer.modules()
                if hasattr(module, "processor") and hasattr(module.processor, "_attention_backend")}
    assert backends == {attention_dispatch.AttentionBackendName._FLASH_3}
    assert attention_dispatch._AttentionBackendRegistry._active_backend == active


def test_missing_torchao_is_a_skip_reason_a_user_can_act_on(monkeypatch):
    import sys

    requirements._torchao.cache_clear()
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    try:
        assert requirements.skip_reason(stages.recipe("int8")) in (
            "torchao is not installed (pip install 'diffusers-perf[torchao]')",
            requirements._compile())  # no compiler: that reason comes first
    finally:
        requirements._torchao.cache_clear()


@pytest.mark.parametrize("floor, finite", [(True, True), (False, False)])
def test_float8_keeps_a_row_of_zeros_finite(monkeypatch, floor, finite):
    """SDXL's pipeline feeds classifier-free guidance an all-zero negative prompt, and torchao's
    row-wise float8 scale had no floor: a zero row quantized as 0/0, every SDXL image NaN on the
    H200. Without the floor the same layer still gives NaN, so the test sees the fault it guards."""
    import torch

    from perf import optimizations

    if requirements.skip_reason(stages.recipe("int8")):  # torchao (and a compiler) missing
        pytest.skip(requirements.skip_reason(stages.recipe("int8")))
    if not torch.cuda.is_available():  # torchao allows float8 on GPUs only; torch's CPU _scaled_mm runs it
        import torchao.float8.inference

        monkeypatch.setattr(torchao.float8.inference, "is_MI300", lambda: True)
    if not floor:
        monkeypatch.setattr(optimizations, "FP8_ROW_AMAX_FLOOR", None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(device, torch.bfloat16)
    optimizations.quantize(model, "fp8")
    tokens = torch.zeros(2, 77, 64, device=device, dtype=torch.bfloat16)
    tokens[1] = torch.randn(77, 64)  # the prompt; tokens[0] is the empty negative prompt
    with torch.no_grad():
        assert bool(torch.isfinite(model(tokens)).all()) is finite


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the skip reasons of a machine without CUDA")
def test_fp8_needs_a_gpu_that_has_float8():
    assert "needs CUDA" in requirements.skip_reason(stages.recipe("fp8"))


# -- memory: a stage that does not fit the GPU skips with its reason ------------------------------

H100 = Path(__file__).resolve().parents[1] / "baselines" / "NVIDIA_H100_80GB_HBM3-x1"


@pytest.mark.parametrize("pipeline, stored", [("sd15", ("0009", "0014", "0015")), ("sdxl", ("0012",)),
                                              ("flux", ("0010", "0017"))])
def test_measured_peaks_are_those_the_suite_stored(pipeline, stored):
    spec = pipelines.SPECS[pipeline]
    peaks = {}
    for number in stored:  # a full ladder, then the quantized stages recorded on their own
        for bench in json.loads((H100 / f"{number}_h100.json").read_text())["benchmarks"]:
            extra = bench["extra_info"]
            assert (extra["pipeline"], extra["size"], extra["batch"]) == (pipeline, spec.size, spec.batch)
            peaks.setdefault(bench["param"], round(extra["peak_memory_bytes"] / 2**30, 2))
    assert requirements.PEAK_GIB[pipeline] == peaks


@pytest.mark.parametrize("pipeline, stored", [("sdxl", ("0020", "0022")), ("flux", ("0024",))])
def test_peaks_measured_only_on_the_h200_are_those_the_suite_stored(pipeline, stored):
    spec = pipelines.SPECS[pipeline]
    peaks = {}
    for number in stored:
        for bench in json.loads((H100.parent / "NVIDIA_H200-x1" / f"{number}_h200.json").read_text())["benchmarks"]:
            extra = bench["extra_info"]
            assert (extra["pipeline"], extra["size"], extra["batch"]) == (pipeline, spec.size, spec.batch)
            assert bench["param"] not in requirements.PEAK_GIB[pipeline]  # the H100's own peak comes first
            peaks[bench["param"]] = round(extra["peak_memory_bytes"] / 2**30, 2)
    assert requirements.PEAK_GIB_H200[pipeline] == peaks


def test_a_stage_that_does_not_fit_skips_with_its_reason_and_one_that_fits_runs():
    reason = requirements.memory_skip("sdxl", "tf32", 16.0)  # a 16 GB card: float32 SDXL peaks at 17.9 GiB
    assert reason == ("needs about 20 GiB of GPU memory (sdxl's tf32 peaked at 17.9 GiB on an H100), "
                      "and this GPU has 16 GiB")
    assert requirements.memory_skip("sdxl", "fp16", 16.0) is None
    assert requirements.memory_skip("flux", "bf16", 24.0).startswith("needs about 38 GiB")
    assert requirements.memory_skip("flux", "bf16", 79.2) is None
    assert requirements.memory_skip("flux", "int8", 24.0) == ("needs about 29 GiB of GPU memory (flux's int8 peaked "
                                                              "at 25.8 GiB on an H200), and this GPU has 24 GiB")
    assert requirements.memory_skip("sdxl", "frontier", 4.0) is None  # not measured: running out of memory fails it
    assert requirements.memory_skip("flux", "fp8", 24.0).startswith("needs about 29 GiB")  # 25.8 GiB on the H100
    assert requirements.memory_skip("sdxl", "tf32", None) is None  # no CUDA


def test_the_run_skips_by_memory_only_at_the_measured_size(monkeypatch):
    monkeypatch.setattr(requirements, "card_gib", lambda: 16.0)
    settings = Settings(pipeline="sdxl", family="sdxl", model=None, stages=["tf32"], steps=20, size=1024, batch=1,
                        budget=Budget(None, 6, 20, 15.0), report=None, count_flops=False)
    monkeypatch.setattr(requirements, "skip_reason", lambda recipe: None)  # as if on CUDA
    assert "needs about 20 GiB" in settings.skip_reason("tf32")
    assert settings.skip_reason("fp16") is None
    smaller = dataclasses.replace(settings, size=512)
    assert smaller.skip_reason("tf32") is None  # another size: no measured peak applies


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantizing_leaves_inductor_settings_as_the_compile_stage_has_them(kind):
    """torchao's default turns on coordinate-descent tuning for the whole process: minutes of first
    compile on an H100, and every later compile stage tuned differently from its baseline."""
    reason = requirements.skip_reason(stages.recipe(kind))
    if reason:
        pytest.skip(reason)
    import torch
    import torch._inductor.config as inductor

    from perf import optimizations

    before = inductor.save_config_portable()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
    optimizations.quantize(model.to(device, torch.bfloat16), kind)
    assert type(model[0].weight) is not torch.nn.Parameter  # quantized: a torchao tensor subclass
    assert inductor.save_config_portable() == before


def test_flops_are_counted_on_the_model_before_its_linears_are_quantized():
    """FLOPs are the model's, whichever stage a run starts with: ``FlopCounterMode`` cannot read
    torchao's int8 tensors (on CUDA it raised and failed ``frontier_int8`` as a run's first stage;
    on CPU it counts nothing for them), so the runner counts before quantizing."""
    if requirements.skip_reason(stages.recipe("int8")):
        pytest.skip(requirements.skip_reason(stages.recipe("int8")))
    import torch

    from perf.runner import Runner

    counted = {}
    for name in ("compile", "int8"):  # int8: compile's recipe with the UNet's linears quantized
        runner = Runner(Settings(pipeline="tiny", model=None, stages=[name], steps=2, size=32, batch=1,
                                 budget=Budget(None, 6, 8, 3.0), report=None, count_flops=True))
        pipe = runner.build(name)  # compiles lazily: nothing is compiled here
        counted[name] = runner._flops
        linear = pipe.unet._orig_mod.down_blocks[0].attentions[0].transformer_blocks[0].ff.net[2]
        assert (type(linear.weight) is torch.nn.Parameter) == (name == "compile")
    assert counted["int8"] == counted["compile"] > 0


def test_a_model_the_flop_counter_cannot_read_is_still_built_and_says_so(monkeypatch):
    """FLOPs only give "% of peak": where ``FlopCounterMode`` raises (as on torchao's int8 tensors
    on CUDA), the stage is built and timed without them, with one line saying why."""
    from perf import flops, progress
    from perf.runner import Runner

    def unreadable(generate, steps):
        raise TypeError("unsupported operand type(s) for *: 'NotImplementedType' and 'Tensor'")

    monkeypatch.setattr(flops, "count_generation_flops", unreadable)
    runner = Runner(Settings(pipeline="tiny", model=None, stages=["fp16"], steps=2, size=32, batch=1,
                             budget=Budget(None, 6, 8, 3.0), report=None, count_flops=True))
    said: list[str] = []
    runner.progress = progress.Progress(lambda line, final: said.append(line) if final else None)
    assert runner.build("fp16") is not None
    assert runner._flops == 0  # not counted again for the next stage
    assert said == ["FLOPs not counted (TypeError: unsupported operand type(s) for *: 'NotImplementedType' and "
                    "'Tensor'): no '% of peak' in this run; --perf-no-flops skips counting"]
