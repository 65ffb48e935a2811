"""Every shipped spec with the parameter count (and, where given, the MACs) of the authors' reference
builds, in one table: the only place a spec's reference count or MACs is written. The count, build and
round-trip tests of `tests/zoo/test_specs.py` are parametrised by it; other tests read `BY_NAME`.

Counts are sums of `numel()` over trainable parameters at the class count the spec defaults to;
variants are other settings the reference counts (100 classes, the ResNet-like 1×1 transitions, the
larger members of a family the library does not ship). MACs are exact where the reference gives them
exactly and otherwise its rounding, as text with the reference's own decimals (`"0.556G"`; torchvision's
table: `"1.81G"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)
SMALL = {"size": 64}  # ImageNet specs build at 64×64 in the tests: the same weights (global pooling)


@dataclass(frozen=True)
class Variant:
    overrides: dict
    params: int
    macs: int | str | None = None


@dataclass(frozen=True)
class Reference:
    spec: str
    params: int
    macs: int | str | None = None
    input: tuple[int, int, int] = CIFAR
    classes: int = 10
    variants: tuple[Variant, ...] = ()
    small: dict = field(default_factory=dict)  # overrides for a quick build and forward pass


def c100(params: int, macs: int | str | None = None) -> Variant:
    return Variant({"classes": 100}, params, macs)


def imagenet(spec: str, params: int, macs: int | str | None = None, variants: tuple[Variant, ...] = ()) -> Reference:
    return Reference(spec, params, macs, IMAGENET, 1000, variants, small=SMALL)


REFERENCE = [
    # DelugeNet (CIFAR, ImageNet) and the DelugeNet paper's ResNet-like baselines, which default to 100
    # classes; `shortcut=1` gives the 1×1 transitions
    Reference("delugenet146", 6_686_250, 691_898_880, variants=(c100(6_709_380),)),
    Reference("delugenet218", 9_981_738, 1_019_054_592, variants=(c100(10_004_868),)),
    Reference("wide_delugenet146", 20_150_658, 2_117_775_744, variants=(c100(20_191_068),)),
    imagenet("delugenet143", 43_589_928, 4_942_903_296),
    imagenet("delugenet152", 51_725_928, 5_224_691_712),
    Reference("resnetlike146", 6_500_100, "0.692G", classes=100, variants=(
        Variant({"shortcut": 1}, 6_172_420, "0.658G"), Variant({"shortcut": 1, "classes": 10}, 6_149_290))),
    Reference("resnetlike218", 9_552_644, "1.019G", classes=100, variants=(
        Variant({"shortcut": 1}, 9_224_964, "0.986G"),)),
    Reference("wide_resnetlike146", 19_824_828, "2.118G", classes=100, variants=(
        Variant({"shortcut": 1}, 18_821_308, "2.015G"),)),
    # DenseNet, DenseNet-BC, pre-activation ResNet, WideResNet (CIFAR)
    Reference("densenet40_k12", 1_019_722, variants=(c100(1_060_132),)),
    Reference("densenet100_k12", 6_979_642, variants=(c100(7_084_852),)),
    Reference("densenet100_k24", 27_249_082, variants=(c100(27_457_972),)),
    Reference("densenet_bc100_k12", 769_162, variants=(c100(800_032),)),
    Reference("densenet_bc250_k24", 15_324_406, variants=(c100(15_480_556),)),
    Reference("densenet_bc190_k40", 25_624_430, variants=(c100(25_821_620),)),
    Reference("preresnet164", 1_703_258, variants=(c100(1_726_388),)),
    Reference("wrn28_10", 36_479_194, variants=(c100(36_536_884),)),
    # SeqConv (CIFAR: SeqResNet, SeqResNet-B, the ablations S2–S4; ImageNet)
    Reference("seqresnet_k8r4", 1_233_370, 282_085_248, variants=(c100(1_250_740),)),
    Reference("seqresnet_k16r10", 7_627_354, "1.724G", variants=(c100(7_670_644),)),
    Reference("seqresnetb_k16r7", 843_834, "0.204G", variants=(c100(874_164),)),
    Reference("seqresnetb_k32r12n3", 6_029_658, "1.417G", variants=(c100(6_081_588),)),
    Reference("seqconv_s2", 1_229_658, variants=(c100(1_242_708),)),
    Reference("seqconv_s3", 1_254_106, variants=(c100(1_271_476),)),
    Reference("seqconv_s4", 1_256_154, variants=(c100(1_269_204),)),
    imagenet("seqresnext24", 26_211_784, 4_543_979_520),
    imagenet("seqresnetb42", 25_642_696, "5.644G"),
    imagenet("seqresnetb22", 11_859_656, "2.883G"),
    # GUNN, and SUNN and GUNN-NoRes with GUNN's weights (CIFAR, ImageNet)
    Reference("gunn15", 1_585_746, 555_716_112, variants=(c100(1_618_236),)),
    Reference("sunn15", 1_585_746, "0.556G", variants=(c100(1_618_236),)),
    Reference("gunn15_nores", 1_585_746, "0.556G", variants=(c100(1_618_236),)),
    Reference("gunn24", 29_534_106, variants=(c100(29_631_396),)),
    Reference("sunn24", 29_534_106, variants=(c100(29_631_396),)),
    imagenet("gunn18", 28_909_736, 7_747_079_552),
    imagenet("sunn18", 28_909_736, "7.747G"),
    imagenet("wide_gunn18", 45_624_936),
    # torchvision's ImageNet classifiers, at torchvision's parameter counts and its model table's GFLOPS
    # (which counts multiply-adds), to the table's two decimals, or the three of the weights' `_ops` where
    # the table rounds that figure a second time (ConvNeXt-B: 15,354,729,472, which the table's 15.36 rounds)
    imagenet("resnet18", 11_689_512, "1.81G"),
    imagenet("resnet34", 21_797_672, "3.66G"),
    imagenet("resnet50", 25_557_032, "4.09G"),
    imagenet("resnet101", 44_549_160, "7.80G"),
    imagenet("resnet152", 60_192_808, "11.51G"),
    imagenet("resnext50_32x4d", 25_028_904, "4.23G"),
    imagenet("resnext101_32x8d", 88_791_336, "16.41G"),
    imagenet("resnext101_64x4d", 83_455_272, "15.46G"),
    imagenet("wide_resnet50_2", 68_883_240, "11.40G"),
    imagenet("wide_resnet101_2", 126_886_696, "22.75G"),
    imagenet("regnet_x_400mf", 5_495_976, "0.41G"),
    imagenet("regnet_x_800mf", 7_259_656, "0.80G"),
    imagenet("regnet_x_1_6gf", 9_190_136, "1.60G"),
    imagenet("regnet_y_400mf", 4_344_144, "0.40G"),
    imagenet("regnet_y_800mf", 6_432_512, "0.83G"),
    imagenet("regnet_y_1_6gf", 11_202_430, "1.61G"),
    imagenet("alexnet", 61_100_840, "0.71G"),
    imagenet("vgg11", 132_863_336, "7.61G"),
    imagenet("vgg11_bn", 132_868_840, "7.61G"),
    imagenet("vgg13", 133_047_848, "11.31G"),
    imagenet("vgg13_bn", 133_053_736, "11.31G"),
    imagenet("vgg16", 138_357_544, "15.47G"),
    imagenet("vgg16_bn", 138_365_992, "15.47G"),
    imagenet("vgg19", 143_667_240, "19.63G"),
    imagenet("vgg19_bn", 143_678_248, "19.63G"),
    imagenet("densenet121", 7_978_856, "2.83G"),
    imagenet("densenet161", 28_681_000, "7.73G"),
    imagenet("densenet169", 14_149_480, "3.36G"),
    imagenet("densenet201", 20_013_928, "4.29G"),
    imagenet("googlenet", 6_624_904, "1.50G"),
    # Inception v3 at its 299×299 (the tests build it at 75×75, the smallest it takes), without AuxLogits:
    # torchvision's 27,161,264 − (conv0 768·128 + 2·128 = 98,560) − (conv1 128·768·25 + 2·768 = 2,459,136)
    # − (fc 768·1000 + 1000 = 769,000) = 27,161,264 − 3,326,696. Its 5.71 GFLOPS (5,713,216,096 here) is the
    # eval model's, which runs no AuxLogits: with their 5,683,200 multiply-adds it would read 5.72
    Reference("inception_v3", 23_834_568, "5.71G", input=(3, 299, 299), classes=1000, small={"size": 75}),
    imagenet("squeezenet1_0", 1_248_424, "0.82G"),
    imagenet("squeezenet1_1", 1_235_496, "0.35G"),
    imagenet("shufflenet_v2_x0_5", 1_366_792, "0.04G"),
    imagenet("shufflenet_v2_x1_0", 2_278_604, "0.14G"),
    imagenet("shufflenet_v2_x1_5", 3_503_624, "0.30G"),
    imagenet("shufflenet_v2_x2_0", 7_393_996, "0.58G"),
    imagenet("convnext_tiny", 28_589_128, "4.46G"),
    imagenet("convnext_small", 50_223_688, "8.68G"),
    imagenet("convnext_base", 88_591_464, "15.355G"),
    imagenet("mobilenet_v2", 3_504_872),
    imagenet("mobilenet_v3_small", 2_542_856),
    imagenet("mobilenet_v3_large", 5_483_032),
    # B5 to B7: the B0 table under torchvision's width and depth multipliers (B1, B2, B4 are shipped)
    imagenet("efficientnet_b0", 5_288_548, variants=(
        Variant({"width": 1.6, "depth": 2.2}, 30_389_784), Variant({"width": 1.8, "depth": 2.6}, 43_040_704),
        Variant({"width": 2.0, "depth": 3.1}, 66_347_960))),
    imagenet("efficientnet_b1", 7_794_184),
    imagenet("efficientnet_b2", 9_109_994),
    imagenet("efficientnet_b3", 12_233_232),
    imagenet("efficientnet_b4", 19_341_616),
    # V2-L: its seven-row table (V2-M is shipped)
    imagenet("efficientnet_v2_s", 21_458_488, variants=(Variant({"stem_width": 32, "table": [
        ["fused", 1, 3, 1, 32, 4], ["fused", 4, 3, 2, 64, 7], ["fused", 4, 3, 2, 96, 7], ["mbconv", 4, 3, 2, 192, 10],
        ["mbconv", 6, 3, 1, 224, 19], ["mbconv", 6, 3, 2, 384, 25], ["mbconv", 6, 3, 1, 640, 7]]}, 118_515_272),)),
    imagenet("efficientnet_v2_m", 54_139_356),
    imagenet("mnasnet0_5", 2_218_512),
    imagenet("mnasnet0_75", 3_170_208),
    imagenet("mnasnet1_0", 4_383_312),
    imagenet("mnasnet1_3", 6_282_256),
    # A small DelugeNet for the 8×8 digits, counted by hand from the reference's rules (§2.1–2.2):
    # stem 144; block 1 (no CLDC before layer 3, which has L = 2): 3,168 + 3,456 + 3,584; transition
    # (CLDC over 3) 18,688; block 2 (CLDC L = 1..3, then 4 for the output): 13,568 + 13,824 + 13,952 + 512;
    # head BN 128 + linear 650
    Reference("tiny_delugenet", 71_674, input=(1, 8, 8)),
    # The cross-layer zoo, written with named tensors and spec-written patterns: timm 1.0.31's counts
    # unless said otherwise.
    # -- HarDNet (PingoLH/Pytorch-HarDNet), VoVNet, SelecSLS
    imagenet("hardnet85", 36_670_212),
    imagenet("hardnet39ds", 3_488_228),
    imagenet("vovnet57a", 36_640_296),
    imagenet("selecsls60", 30_670_768),
    # -- DLA, DPN, HRNet
    # (MACs: half the FLOPs torch's flop counter counts in each timm module's forward pass at 224×224)
    # variants: timm's dla34, dla46_c, dla46x_c, dla60x; dla102x, dla102x2, dla169; dpn68, dpn98, dpn131, dpn107;
    # hrnet_w18_small, hrnet_w18, hrnet_w32, hrnet_w64
    imagenet("dla60", 22_036_632, 4_235_878_400, variants=(
        Variant({"levels": [1, 1, 1, 2, 2, 1], "widths": [16, 32, 64, 128, 256, 512], "unit": "basic"}, 15_742_104),
        Variant({"levels": [1, 1, 1, 2, 2, 1], "widths": [16, 32, 64, 64, 128, 256]}, 1_301_400),
        Variant({"levels": [1, 1, 1, 2, 2, 1], "widths": [16, 32, 64, 64, 128, 256], "cardinality": 32,
                 "base_width": 4}, 1_068_440),
        Variant({"cardinality": 32, "base_width": 4}, 17_352_344))),
    imagenet("dla102", 33_268_888, 7_164_551_168, variants=(
        Variant({"cardinality": 32, "base_width": 4}, 26_309_272),
        Variant({"cardinality": 64, "base_width": 4}, 41_282_200),
        Variant({"levels": [1, 1, 2, 3, 5, 1]}, 53_389_720))),
    imagenet("dpn92", 37_668_392, 6_501_684_224, variants=(
        Variant({"stem_width": 10, "stem_kernel": 3, "k_r": 128, "depths": [3, 4, 12, 3], "incs": [16, 32, 32, 64],
                 "widths": [64, 128, 256, 512]}, 12_611_602),
        Variant({"stem_width": 96, "k_r": 160, "groups": 40, "depths": [3, 6, 20, 3], "incs": [16, 32, 32, 128]},
                61_570_728),
        Variant({"stem_width": 128, "k_r": 160, "groups": 40, "depths": [4, 8, 28, 3], "incs": [16, 32, 32, 128]},
                79_254_504),
        Variant({"stem_width": 128, "k_r": 200, "groups": 50, "depths": [4, 8, 20, 3], "incs": [20, 64, 64, 128]},
                86_917_800))),
    imagenet("hrnet_w18_small_v2", 15_597_464, 2_595_712_864, variants=(
        Variant({"widths": [16, 32, 64, 128], "modules": [1, 1, 1], "stage1_blocks": 1, "stage1_width": 32},
                13_187_464),
        Variant({"modules": [1, 4, 3], "blocks": 4, "stage1_blocks": 4}, 21_299_004),
        Variant({"widths": [32, 64, 128, 256], "modules": [1, 4, 3], "blocks": 4, "stage1_blocks": 4}, 41_232_680),
        Variant({"widths": [64, 128, 256, 512], "modules": [1, 4, 3], "blocks": 4, "stage1_blocks": 4}, 128_059_944))),
    # -- Res2Net, Res2NeXt, CSPResNeXt, FractalNet (khanrc/pt.fractalnet)
    # (MACs: half the FLOPs torch's flop counter counts in each reference module's forward pass)
    imagenet("res2net101_26w_4s", 45_206_688, 8_066_974_464),
    imagenet("res2next50", 24_671_464, 4_172_677_120),
    imagenet("cspresnext50", 20_569_896, 3_074_424_832),
    # FractalNet((3, 32, 32, 10), n_columns=4, init_channels=64, p_ldrop=0.15, dropout_probs=[0, .1, .2, .3, .4],
    # gdrop_ratio=0.5)
    Reference("fractalnet40", 76_106_634, 2_036_077_568),
]

BY_NAME = {r.spec: r for r in REFERENCE}
