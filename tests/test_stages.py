import pytest

from perf import requirements, stages


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
    assert stages.parse("all") == stages.names()


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
