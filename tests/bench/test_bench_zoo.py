"""The pure helpers of benchmarks/bench_zoo.py (the bench itself needs paddleclas), and
one row of its toolkit models where paddlenlp is installed."""
import sys

import pytest
from helpers import BENCHMARKS

sys.path.insert(0, BENCHMARKS)
import bench_zoo  # noqa: E402


def test_family_of_names_the_zoo_uses():
    assert [bench_zoo.family_of(n) for n in (
        "ResNet50_vd", "MobileNetV3_large_x1_0", "Res2Net50_26w_4s", "SE_ResNeXt50_32x4d",
        "ViT_small_patch16_224", "RegNetX_4GF", "PVT_V2_B0", "MobileViTV2_x0_5")] == [
        "ResNet", "MobileNetV3", "Res2Net", "SE_ResNeXt", "ViT", "RegNetX", "PVT", "MobileViTV2"]


def test_pick_models_takes_the_smallest_looking_name_per_family():
    names = ["ResNet101", "ResNet18", "ResNet50_vd", "ViT_base_patch16_224",
             "ViT_small_patch16_224", "DeiT_tiny_patch16_224"]
    assert bench_zoo.pick_models(names) == ["DeiT_tiny_patch16_224", "ResNet18",
                                            "ViT_small_patch16_224"]
    assert bench_zoo.pick_models(names, families={"ViT"}) == ["ViT_small_patch16_224"]
    assert bench_zoo.pick_models(names, limit=1) == ["DeiT_tiny_patch16_224"]
    assert bench_zoo.pick_models(["MAE_vit_huge_patch14", "MAE_vit_base_patch16"]) == [
        "MAE_vit_base_patch16"]


def test_input_size_of():
    assert bench_zoo.input_size_of("SwinTransformer_base_patch4_window12_384") == 384
    assert bench_zoo.input_size_of("ResNet50") == 224
    assert bench_zoo.input_size_of("AdaFace_IR_18") == 112
    assert bench_zoo.input_size_of("SwinTransformerV2_tiny_patch4_window8_256") == 256


def test_summary_and_table():
    rows = [{"model": "A1", "family": "A", "input": 224, "status": "ok", "macs": 2e9,
             "macs_cut": 0.5, "exact": True, "max_diff": 1e-6, "trains": True, "prune_s": 1.25,
             "top_blocker": "reshape", "top_blocker_share": 0.25},
            {"model": "B1", "family": "B", "input": 224, "status": "ok", "macs": 1e9,
             "macs_cut": 0.25, "exact": False, "max_diff": 0.5, "trains": True, "prune_s": 2.0,
             "top_blocker": "", "top_blocker_share": 0.0},
            {"model": "C1", "family": "C", "input": 224, "status": "timeout", "error": "over 300 s"}]
    result = bench_zoo.summary(rows)
    assert result == {"models": 3, "pruned": 2, "exact": 1, "not_comparable": 0, "trains": 2,
                      "median_macs_cut": 0.375, "failed": [("C1", "over 300 s")]}
    lines = bench_zoo.format_table(rows).splitlines()
    assert lines[2] == "| A | A1 | 224 | 2.00 | 50.0% | yes (1.0e-06) | yes | 1.2 | reshape (25%) |"
    assert lines[3].startswith("| B | B1 | 224 | 1.00 | 25.0% | NO (5.0e-01) |")
    assert lines[4] == "| C | C1 | 224 | | timeout | | | | over 300 s |"


def test_parse_structure_takes_field_choice_pairs():
    assert bench_zoo.parse_structure(["grouped_conv=channels"]) == {"grouped_conv": "channels"}
    assert bench_zoo.parse_structure(None) == {}
    try:
        bench_zoo.parse_structure(["grouped_conv"])
    except SystemExit as err:
        assert "field=choice" in str(err)
    else:
        raise AssertionError("a pair without '=' must be refused")


@pytest.mark.slow
def test_a_toolkit_model_row_is_exact_trains_and_exports():
    """``bench_zoo --toolkits``' row of a small BERT from paddlenlp (skipped without it)."""
    pytest.importorskip("paddlenlp")
    import zoo_toolkits
    row = zoo_toolkits.measure("BERT_small", 0.3, {"attention": "heads"})
    assert row["exact"] and row["ln_exact"] and row["trains"], row
    assert row["export"].startswith("verified") and row["macs_cut"] >= 0.4, row
