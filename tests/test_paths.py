"""Every implementation of every pass, on every ISA.

test_every_implementation_forced sweeps each pass's whole implementation list (as the core
reports it for the problem): every entry that applies is forced through the private hook
convcore._conv._force_implementations and checked against the float64 direct loops.

The core also picks an implementation from the problem alone (the ordered lists in
cpp/src/conv/forward.cpp, backward_data.cpp, backward_weights.cpp); each case below asserts
the choice it is meant to exercise:
  * NCHW with >= 128 channels (or, backward-data, filters) per group and >= 1000 FLOPs
    per element of x and y -> via_nhwc: the channels-last tiles on transposed copies
    (indirect_nhwc_rows' tiles for one group under 32 channels, or at 32 with under 5 % of
    the products in the padding)
    (forward; backward-data at stride 1); forward where direct_stride1 would not run:
    >= 8 channels, >= 20 MFLOP and >= 200 FLOPs per element; the cases below are too small for that rule,
    so the sweep reaches via_nhwc by forcing it. Backward-weight: NCHW with < 16 channels
    or <= 32 filters per group and >= 200 FLOPs per element -> via_nhwc (the NHWC list's
    executor on transposed copies, dW permuted back);
  * NCHW, stride 1, Wo >= 2·(S−1)·dilation, and Ho·Wo >= 128 (forward; backward-data
    256) or N == 1 -> the direct
    stride-1 executor (B read in place from a padded copy; backward-data as a full
    correlation with flipped weights, which also covers padding larger than the kernel);
  * NCHW, Ho·Wo < 256 and N > 1 -> several images per GEMM (buffered store / col2im);
    without padding and with output rows shorter than a micro-panel, its packer gathers
    through offset tables instead of row segments;
  * NCHW otherwise -> one implicit-im2col GEMM per image;
  * NHWC forward with one group, fewer than 32 channels and unit width dilation -> one
    depth segment per kernel row (S·C contiguous input values) read in place through row
    pointers, windows crossing a side border copied ("indirect_nhwc_rows");
  * NHWC with >= 8 channels per group -> pixels read in place through row pointers
    (indirection); backward-data too when the stride is 1 and there are >= 8 filters per
    group (full correlation);
  * backward-weight, NCHW with at most 32 filters per group and 512 im2col columns ->
    pixel_split with the filters on the tile's columns (dy transposed per block);
    NCHW with unit width stride, output rows >= 16 pixels (shorter ones with <= 2048
    im2col columns and >= 256 pixels to reduce) and more than 8
    filters per group -> im2col read in place, one output row per depth segment ("tap rows"); NHWC with channels per
    group a multiple of 32 (and a kernel larger than 1×1 or <= 64 filters) -> im2col read
    in place through per-pixel offsets ("pixel rows"); otherwise packed;
  * NHWC otherwise -> pixels × taps im2col GEMM over the batch (col2im for backward-data);
  * backward-data with a stride > 1, at least 8 input channels per group and phase maps
    (the input map over the stride) of >= 64 pixels or one image -> the sub-pixel
    decomposition (one stride-1 correlation per phase of dx; NHWC with >= 8 filters per
    group: its phases on the channels-last tiles, "subpixel_nhwc"); otherwise col2im.
  * NCHW forward with <= 4 channels per group, <= 160 taps (channels × R × S) per group
    (128 on ISAs with 32-byte vectors: AVX2, portable), output rows >= 16 columns and >= 4 images × groups -> the dwconv family's dense rows
    (every channel and tap of a group as a tap, 8 filters side by side: "dense_rows_nchw");
    backward-weight too (taps × filters of partial sums in registers);
  * depthwise (groups == in_channels, any multiplier) -> the dwconv kernels, every pass
    (depthwise_nchw / depthwise_nhwc); NHWC groups of 2, 4 or 8 channels and as many
    filters -> the same kernels with lane permutations (grouped_nhwc).
Sizes are chosen so each case lands on the intended path and still crosses tile edges.
"""
import numpy as np
import pytest

import convcore
from convcore._conv import _Problem, _algorithms, _force_implementations, _implementations
from reference import check_backward_input, check_backward_weight, check_forward

CASES = {
    # name: (x shape NCHW, (K, R, S), keyword arguments)
    "direct_3x3_pad1": ((2, 5, 17, 18), (11, 3, 3), dict(padding=1)),
    "direct_asym_pad_dilated": ((2, 3, 20, 19), (9, 3, 2), dict(padding=(2, 0, 1, 3), dilation=(2, 3))),
    "direct_pad_beyond_kernel": ((1, 4, 9, 23), (6, 2, 3), dict(padding=(4, 3, 5, 4))),
    "direct_1x1": ((3, 7, 16, 17), (13, 1, 1), dict()),
    "direct_groups": ((2, 10, 16, 18), (10, 3, 3), dict(padding="same", groups=2)),
    "direct_one_image_small_map": ((1, 4, 5, 9), (10, 3, 3), dict(padding=(1, 2, 0, 1))),
    "multi_image_small_map": ((5, 6, 7, 7), (17, 3, 3), dict(padding=1)),
    "direct_mid_map": ((2, 6, 12, 13), (9, 3, 3), dict(padding=1)),
    # 2 to 7 channels at a column stride: via_nhwc's rows tiles where the output rows are
    # under 16 columns or the kernel rows hold 20 values or more, else the im2col packing
    # (the forward of up to 4 channels with output rows of 16 columns or more: dense_rows_nchw,
    # at any batch)
    "multi_image_strided": ((4, 3, 11, 13), (10, 3, 3), dict(stride=2, shape_rule="crop")),
    "im2col_short_kernel_rows_strided": ((2, 3, 21, 40), (11, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    "multi_image_unpadded_groups_dilated": ((3, 6, 9, 11), (8, 3, 2), dict(stride=(1, 2), dilation=(2, 1), groups=2, shape_rule="crop")),
    "per_image_strided": ((2, 4, 40, 37), (9, 3, 3), dict(stride=(2, 1), padding=1, shape_rule="crop")),
    "indirect_nhwc_3x3": ((2, 12, 9, 10), (16, 3, 3), dict(padding=1)),
    "indirect_nhwc_strided_dilated": ((3, 9, 13, 12), (10, 3, 2), dict(stride=(2, 3), dilation=(2, 1), padding=(1, 2, 0, 3), shape_rule="crop")),
    "indirect_nhwc_pad_beyond_kernel": ((1, 8, 6, 7), (9, 2, 3), dict(padding=(3, 4, 5, 3))),
    "indirect_nhwc_groups": ((2, 16, 8, 9), (24, 3, 3), dict(padding="same", groups=2)),
    # >= 5 % of the products with padding: rows in region order (micro-tiles straddle
    # regions: corners of 3 pixels), taps outside skipped; bands per axis > 16: memory order
    "indirect_nhwc_regions_7x7": ((3, 16, 7, 7), (24, 3, 3), dict(padding=1)),
    "indirect_nhwc_regions_dilated_strided": ((2, 8, 13, 11), (9, 5, 4), dict(stride=(2, 1), dilation=(2, 3), padding=(4, 3, 5, 6), shape_rule="crop")),
    "indirect_nhwc_many_bands": ((1, 8, 8, 8), (8, 10, 10), dict(padding=9)),
    "pixel_rows_nhwc_3x3": ((2, 32, 9, 10), (12, 3, 3), dict(padding=1)),
    "pixel_rows_nhwc_unpadded_strided": ((2, 64, 11, 9), (10, 3, 2), dict(stride=2, dilation=(1, 2), shape_rule="crop")),
    "pixel_rows_nhwc_1x1": ((2, 32, 6, 7), (8, 1, 1), dict()),
    "pixel_rows_nhwc_groups": ((2, 64, 6, 6), (16, 3, 3), dict(padding=(0, 1, 2, 0), groups=2)),
    "per_image_narrow_map": ((2, 3, 60, 5), (5, 3, 5), dict(padding=(1, 1, 2, 2))),
    # pixel_split: enough pixels for 2 chunks (>= 2048) or 8 (>= 8192), partials summed
    "pixel_split_nhwc_stem": ((2, 3, 150, 28), (10, 7, 7), dict(stride=2, padding=3, shape_rule="crop")),
    "pixel_split_nhwc_1x1_groups": ((4, 64, 24, 24), (16, 1, 1), dict(groups=2)),
    "pixel_split_nhwc_dilated_asym": ((2, 5, 90, 91), (6, 3, 2), dict(dilation=(2, 3), padding=(1, 2, 0, 3))),
    # 24·5·5 = 600 columns: two column blocks, the second starting inside a tap; 5 filters
    "pixel_split_nhwc_wide_taps": ((2, 24, 40, 40), (5, 5, 5), dict(padding=2)),
    # more filters than any MC block (1024): dYᵀ packed block by block
    "pixel_split_nhwc_many_filters": ((1, 2, 6, 7), (1100, 2, 2), dict()),
    # filters in the vector lanes (at most one tile's NR filters): 16 (fp32: the narrow
    # tile's whole vector; fp64: the main tile's) and 32 (fp32: the main tile's two
    # vectors), windows in the padding on every side, several panels of taps
    "pixel_split_lanes_16_filters": ((2, 3, 40, 36), (16, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    "pixel_split_lanes_32_filters": ((2, 2, 52, 41), (32, 5, 4), dict(stride=(2, 1), padding=(2, 1), shape_rule="crop")),
    # the tiled weight-gradient executors with the reduction in 2 chunks (>= 8192 pixels):
    # chunk boundaries inside an image, partials summed in order
    "tap_rows_chunks": ((2, 6, 64, 70), (40, 3, 3), dict(padding=1)),
    "pixel_rows_nhwc_chunks": ((3, 32, 50, 57), (12, 3, 3), dict(padding=1)),
    "im2col_wgrad_chunks": ((2, 8, 130, 132), (40, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    "subpixel_strided": ((2, 16, 20, 18), (12, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    # 264 filters: a phase of 4 taps reduces over 1056 values, two KC blocks of the
    # channels-last tiles (at most 1024 deep), the second adding to what the first stored;
    # phases of 24 × 25 pixels, few enough taps in the padding (4 %) for no pixel regions,
    # so micro-tiles of 8 pixels straddle phase rows
    "subpixel_strided_deep": ((1, 8, 48, 50), (264, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    "depthwise_3x3": ((2, 16, 9, 10), (16, 3, 3), dict(padding=1, groups=16)),
    "depthwise_multiplier3_strided": ((2, 5, 11, 12), (15, 3, 2), dict(stride=2, dilation=(1, 2), padding=(1, 0, 2, 1), groups=5, shape_rule="crop")),
    "depthwise_kernel_beyond_map": ((3, 4, 1, 2), (8, 3, 5), dict(padding=(1, 1, 2, 2), groups=4)),
    "grouped_cg4": ((2, 8, 7, 9), (8, 3, 3), dict(padding=1, groups=2)),
    "rows_nhwc_stem": ((2, 3, 19, 17), (40, 7, 7), dict(stride=2, padding=3, shape_rule="crop")),
    "rows_nhwc_wide_unpadded": ((2, 3, 27, 29), (33, 11, 11), dict(stride=4, shape_rule="crop")),
    "rows_nhwc_kernel_beyond_map": ((1, 2, 5, 4), (5, 3, 6), dict(padding=(2, 3, 1, 4), dilation=(2, 1))),
    "rows_nhwc_rows_across_kc": ((1, 31, 8, 14), (9, 5, 11), dict(padding=(2, 5), dilation=(2, 1))),
    # dense rows: <= 4 channels per group, output rows >= 16, >= 4 images × groups; filters
    # not a multiple of the kernel's 8 (11: a block of 8 and one of 3), rows of 20 and 41
    # columns (a whole vector, a border chunk and a tail), stride-2 phases
    "dense_rows_rgb_stem": ((4, 3, 21, 40), (11, 3, 3), dict(stride=2, padding=1, shape_rule="crop")),
    "dense_rows_one_channel_wide": ((4, 1, 13, 45), (17, 3, 6), dict(stride=(2, 1), dilation=(1, 2), padding=(2, 1, 4, 3), shape_rule="crop")),
    # output rows and columns that no tap reaches: the empty sum's bias and ReLU
    "dense_rows_padding_beyond_kernel": ((4, 3, 6, 12), (9, 3, 3), dict(padding=(3, 4, 6, 21))),
    "dense_rows_groups": ((2, 8, 9, 50), (6, 2, 3), dict(stride=(1, 3), padding=(0, 2), groups=2, shape_rule="crop")),
}


# (forward, backward_data, backward_weight) executor per case and layout, as the rules
# above give them; together the cases reach every executor of every pass.
EXPECTED = {
    'direct_1x1': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'direct_3x3_pad1': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'direct_asym_pad_dilated': {
        'NCHW': ('dense_rows_nchw', 'direct_stride1', 'pixel_split'),
        'NHWC': ('im2col_nhwc', 'indirect_nhwc', 'pixel_split'),
    },
    'direct_groups': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('im2col_nhwc', 'col2im', 'pixel_split'),
    },
    'direct_one_image_small_map': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'direct_pad_beyond_kernel': {
        'NCHW': ('dense_rows_nchw', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'indirect_nhwc_3x3': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'indirect_nhwc_groups': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'indirect_nhwc', 'pixel_split'),
    },
    'indirect_nhwc_pad_beyond_kernel': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'indirect_nhwc_strided_dilated': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'subpixel_nhwc', 'pixel_split'),
    },
    'multi_image_small_map': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'dense_rows_padding_beyond_kernel': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'dense_rows_nchw'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'im2col_short_kernel_rows_strided': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'multi_image_strided': {
        'NCHW': ('via_nhwc', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'pixel_rows_nhwc_1x1': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_rows'),  # 32 ch, unpadded
    },
    'pixel_rows_nhwc_3x3': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'indirect_nhwc', 'pixel_rows'),
    },
    'pixel_rows_nhwc_groups': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'indirect_nhwc', 'pixel_rows'),
    },
    'pixel_rows_nhwc_unpadded_strided': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'subpixel_nhwc', 'pixel_rows'),
    },
    'per_image_narrow_map': {
        'NCHW': ('im2col_per_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'subpixel_strided': {
        'NCHW': ('im2col_multi_image', 'subpixel', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'subpixel_nhwc', 'pixel_split'),
    },
    'subpixel_strided_deep': {
        'NCHW': ('im2col_per_image', 'subpixel', 'im2col'),
        'NHWC': ('indirect_nhwc_rows', 'subpixel_nhwc', 'im2col'),
    },
    'depthwise_3x3': {
        'NCHW': ('depthwise_nchw', 'depthwise_nchw', 'depthwise_nchw'),
        'NHWC': ('depthwise_nhwc', 'depthwise_nhwc', 'depthwise_nhwc'),
    },
    'depthwise_multiplier3_strided': {
        'NCHW': ('depthwise_nchw', 'depthwise_nchw', 'depthwise_nchw'),
        'NHWC': ('depthwise_nhwc', 'depthwise_nhwc', 'depthwise_nhwc'),
    },
    'depthwise_kernel_beyond_map': {
        'NCHW': ('depthwise_nchw', 'depthwise_nchw', 'depthwise_nchw'),
        'NHWC': ('depthwise_nhwc', 'depthwise_nhwc', 'depthwise_nhwc'),
    },
    'grouped_cg4': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('grouped_nhwc', 'grouped_nhwc', 'grouped_nhwc'),
    },
    'pixel_split_lanes_16_filters': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'pixel_split_lanes_32_filters': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'pixel_split_nhwc_stem': {
        'NCHW': ('via_nhwc', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'pixel_split_nhwc_1x1_groups': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'indirect_nhwc', 'pixel_split'),
    },
    'pixel_split_nhwc_dilated_asym': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('im2col_nhwc', 'col2im', 'pixel_split'),
    },
    'pixel_split_nhwc_wide_taps': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'via_nhwc'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'pixel_split_nhwc_many_filters': {
        'NCHW': ('direct_stride1', 'direct_stride1', 'im2col'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'per_image_strided': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'indirect_nhwc_regions_7x7': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'indirect_nhwc_regions_dilated_strided': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc', 'subpixel_nhwc', 'pixel_split'),
    },
    'indirect_nhwc_many_bands': {
        'NCHW': ('im2col_per_image', 'col2im', 'via_nhwc'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'direct_mid_map': {
        'NCHW': ('direct_stride1', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'multi_image_unpadded_groups_dilated': {
        'NCHW': ('im2col_multi_image', 'col2im', 'pixel_split'),
        'NHWC': ('im2col_nhwc', 'col2im', 'pixel_split'),
    },
    'rows_nhwc_kernel_beyond_map': {
        'NCHW': ('im2col_per_image', 'col2im', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'rows_nhwc_rows_across_kc': {
        'NCHW': ('im2col_per_image', 'col2im', 'via_nhwc'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    'rows_nhwc_stem': {
        'NCHW': ('via_nhwc', 'col2im', 'via_nhwc'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'rows_nhwc_wide_unpadded': {
        'NCHW': ('via_nhwc', 'col2im', 'via_nhwc'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'dense_rows_rgb_stem': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'dense_rows_nchw'),
        'NHWC': ('indirect_nhwc_rows', 'col2im', 'pixel_split'),
    },
    'dense_rows_one_channel_wide': {
        'NCHW': ('dense_rows_nchw', 'depthwise_nchw', 'dense_rows_nchw'),
        'NHWC': ('im2col_nhwc', 'depthwise_nhwc', 'pixel_split'),
    },
    'dense_rows_groups': {
        'NCHW': ('dense_rows_nchw', 'col2im', 'dense_rows_nchw'),
        'NHWC': ('im2col_nhwc', 'col2im', 'pixel_split'),
    },
    "tap_rows_chunks": {
        'NCHW': ('direct_stride1', 'direct_stride1', 'tap_rows'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_split'),
    },
    "pixel_rows_nhwc_chunks": {
        'NCHW': ('direct_stride1', 'direct_stride1', 'pixel_split'),
        'NHWC': ('indirect_nhwc_rows', 'indirect_nhwc', 'pixel_rows'),  # 32 ch, 2.5 % padded
    },
    "im2col_wgrad_chunks": {
        'NCHW': ('im2col_per_image', 'subpixel', 'im2col'),
        'NHWC': ('indirect_nhwc_rows', 'subpixel_nhwc', 'pixel_split'),
    },
}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_path_all_passes(isa, case, layout):
    x_shape, (k, r, s), kw = CASES[case]
    n, c, h, w = x_shape
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal((k, c // groups, r, s))
    b = rng.standard_normal(k)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(0, 2, 3, 1))
    kw = dict(kw, layout=layout)
    algos = _algorithms(x.shape, wt.shape, **kw)
    assert (algos["forward"], algos["backward_data"], algos["backward_weight"]) == \
        EXPECTED[case][layout]
    y = convcore.conv2d(x, wt, b, activation="relu", **kw)
    check_forward(y, x, wt, b, activation="relu", dtype=np.float64, what=f"{case} fwd", **kw)
    dy = rng.standard_normal(y.shape)
    dx = convcore.conv2d_backward_input(dy, wt, x.shape, **kw)
    check_backward_input(dx, dy, wt, x.shape, dtype=np.float64, what=f"{case} bwd-data", **kw)
    dw = convcore.conv2d_backward_weight(dy, x, wt.shape, **kw)
    check_backward_weight(dw, dy, x, wt.shape, dtype=np.float64, what=f"{case} bwd-weight", **kw)
    # float32 through the same path
    x32, w32, dy32 = x.astype(np.float32), wt.astype(np.float32), dy.astype(np.float32)
    y32 = convcore.conv2d(x32, w32, b.astype(np.float32), **kw)
    check_forward(y32, x32, w32, b.astype(np.float32), dtype=np.float32, what=f"{case} fwd f32", **kw)
    dx32 = convcore.conv2d_backward_input(dy32, w32, x.shape, **kw)
    check_backward_input(dx32, dy32, w32, x.shape, dtype=np.float32, what=f"{case} bwd-data f32", **kw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_path_bitwise_across_threads(case, restore_threads):
    x_shape, (k, r, s), kw = CASES[case]
    n, c, h, w = x_shape
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    results = []
    for threads in (1, 2, 3):
        convcore.set_num_threads(threads)
        y = convcore.conv2d(x, wt, **kw)
        dy = np.cos(np.arange(y.size, dtype=np.float32)).reshape(y.shape)
        g = convcore.conv2d_backward(dy, x, wt, **kw)
        results.append((y, g.input, g.weight, g.bias))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def _case_arrays(case, layout, dtype):
    x_shape, (k, r, s), kw = CASES[case]
    n, c, h, w = x_shape
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(hash((case, layout)) % 2**32)
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal((k, c // groups, r, s))
    b = rng.standard_normal(k)
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(0, 2, 3, 1))
    return x.astype(dtype), wt.astype(dtype), b.astype(dtype), dict(kw, layout=layout)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_implementation_forced(isa, case, layout, dtype):
    x, wt, b, kw = _case_arrays(case, layout, dtype)
    name = np.dtype(dtype).name
    lists = _implementations(x.shape, wt.shape, dtype=name, **kw)
    y_shape = convcore.conv2d_output_shape(x.shape, wt.shape, **kw)
    dy = np.random.default_rng(3).standard_normal(y_shape).astype(dtype)
    for entry in lists["forward"]:
        if entry["applies"]:
            with _force_implementations(forward=entry["name"]):
                assert _algorithms(x.shape, wt.shape, dtype=name, **kw)["forward"] == entry["name"]
                y = convcore.conv2d(x, wt, b, activation="relu", **kw)
            check_forward(y, x, wt, b, activation="relu", dtype=dtype,
                          what=f"{case} fwd {entry['name']}", **kw)
    for entry in lists["backward_data"]:
        if entry["applies"]:
            with _force_implementations(backward_data=entry["name"]):
                dx = convcore.conv2d_backward_input(dy, wt, x.shape, **kw)
            check_backward_input(dx, dy, wt, x.shape, dtype=dtype,
                                 what=f"{case} bwd-data {entry['name']}", **kw)
    for entry in lists["backward_weight"]:
        if entry["applies"]:
            with _force_implementations(backward_weight=entry["name"]):
                dw = convcore.conv2d_backward_weight(dy, x, wt.shape, **kw)
            check_backward_weight(dw, dy, x, wt.shape, dtype=dtype,
                                  what=f"{case} bwd-weight {entry['name']}", **kw)


def test_every_implementation_is_reached_and_explained():
    """Over the cases, every entry of every list applies somewhere (so the sweep above runs
    it, or, for the Winograd entry, which applies only when asked for, test_winograd.py);
    an entry that does not apply says why; forcing one that does not apply fails."""
    reached = {}
    for case in CASES:
        for layout in ("NCHW", "NHWC"):
            x, wt, _, kw = _case_arrays(case, layout, np.float32)
            for algorithm in (None, "winograd"):
                try:
                    lists = _implementations(x.shape, wt.shape, algorithm=algorithm, **kw)
                except ValueError as e:   # Winograd asked for where it cannot compute
                    assert algorithm == "winograd" and "cannot compute" in str(e), e
                    continue
                for pass_, entries in lists.items():
                    for e in entries:
                        reached.setdefault((pass_, e["name"]), False)
                        reached[(pass_, e["name"])] |= e["applies"]
                        if not e["applies"]:
                            assert e["reason"], e
    assert all(reached.values()), [k for k, v in reached.items() if not v]
    assert len(reached) >= 11
    with _force_implementations(forward="direct_stride1"):
        with pytest.raises(ValueError, match="stride 1"):
            convcore.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), stride=2)
    with _force_implementations(backward_weight="bogus"):
        with pytest.raises(ValueError, match="does not exist"):
            convcore.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)))


def test_via_nhwc_in_several_chunks():
    """via_nhwc transposes a chunk of images at a time into a scratch of 2**21 elements per
    operand: with over a million elements per image it runs three chunks (2 + 2 + 1
    images), in every pass (the weight gradient adds the chunks' partial gradients; with
    under 16 channels it bounds x and dy together by 2**22, tested below). Checked
    against the NCHW executors (which the sweep above checks against the float64 loops on
    small cases): the chunks must tile the batch exactly, bias and ReLU included."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((5, 32, 180, 181))
    w = rng.standard_normal((8, 32, 3, 3))
    b = rng.standard_normal(8)
    with _force_implementations(forward="im2col_per_image"):
        want = convcore.conv2d(x, w, b, padding=1, activation="relu")
    with _force_implementations(forward="via_nhwc"):
        got = convcore.conv2d(x, w, b, padding=1, activation="relu")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(want.shape)
    with _force_implementations(backward_data="col2im"):
        want_dx = convcore.conv2d_backward_input(dy, w, x.shape, padding=1)
    with _force_implementations(backward_data="via_nhwc"):
        got_dx = convcore.conv2d_backward_input(dy, w, x.shape, padding=1)
    np.testing.assert_allclose(got_dx, want_dx, rtol=1e-12, atol=1e-12)
    # the weight gradient: chunks' partial gradients added in chunk order
    with _force_implementations(backward_weight="im2col"):
        want_dw = convcore.conv2d_backward_weight(dy, x, w.shape, padding=1)
    with _force_implementations(backward_weight="via_nhwc"):
        got_dw = convcore.conv2d_backward_weight(dy, x, w.shape, padding=1)
    np.testing.assert_allclose(got_dw, want_dw, rtol=1e-10, atol=1e-9)
    # 3 channels: x and dy together (1.4 million elements per image) in 2**22, so two
    # chunks of 2 + 1 images (per operand it would be three of one).
    x3 = rng.standard_normal((3, 3, 200, 200))
    w3 = rng.standard_normal((32, 3, 3, 3))
    dy3 = rng.standard_normal((3, 32, 200, 200))
    with _force_implementations(backward_weight="im2col"):
        want_dw = convcore.conv2d_backward_weight(dy3, x3, w3.shape, padding=1)
    with _force_implementations(backward_weight="via_nhwc"):
        got_dw = convcore.conv2d_backward_weight(dy3, x3, w3.shape, padding=1)
    np.testing.assert_allclose(got_dw, want_dw, rtol=1e-10, atol=1e-9)


# Weight-gradient cases for the splits (case, layout, executor); CASES' chunked cases and
# pixel_split with more than 32 filters (not in the lanes) and 2 chunks, whose columns are
# cut into ranges where the chunks are fewer than the threads.
SPLIT_CASES = {
    "pixel_split_column_ranges": (((2, 40, 33, 33), (40, 3, 3), dict(padding=1)), "NHWC", "pixel_split"),
    "pixel_rows_nhwc_chunks": (CASES["pixel_rows_nhwc_chunks"], "NHWC", "pixel_rows"),
    "tap_rows_chunks": (CASES["tap_rows_chunks"], "NCHW", "tap_rows"),
    "im2col_wgrad_chunks": (CASES["im2col_wgrad_chunks"], "NCHW", "im2col"),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(SPLIT_CASES))
def test_weight_gradient_splits_bitwise_across_threads(isa, case, dtype, restore_threads):
    """The weight-gradient executors that cut the reduction into chunks (fixed by the
    problem) and dW into tiles or column ranges (following the thread count): the same
    bits for any thread count, on every ISA, and right."""
    (x_shape, (k, r, s), kw), layout, expected = SPLIT_CASES[case]
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(len(case))
    x = rng.standard_normal(x_shape)
    wt = rng.standard_normal((k, x_shape[1] // groups, r, s))
    if layout == "NHWC":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wt = np.ascontiguousarray(wt.transpose(0, 2, 3, 1))
    x, wt, kw = x.astype(dtype), wt.astype(dtype), dict(kw, layout=layout)
    y_shape = convcore.conv2d_output_shape(x.shape, wt.shape, **kw)
    dy = np.random.default_rng(5).standard_normal(y_shape).astype(dtype)
    results = []
    for threads in (1, 2, 3, 8):
        convcore.set_num_threads(threads)
        assert _algorithms(x.shape, wt.shape, dtype=np.dtype(dtype).name, **kw)["backward_weight"] == expected
        results.append(convcore.conv2d_backward_weight(dy, x, wt.shape, **kw))
    for other in results[1:]:
        assert np.array_equal(results[0], other)
    check_backward_weight(results[0], dy, x, wt.shape, dtype=dtype,
                          what=f"{case} bwd-weight {expected}", **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pass_", ["forward", "backward_data"])
def test_via_nhwc_column_tiles_across_threads(isa, dtype, pass_, restore_threads):
    """via_nhwc writes each C block of its NHWC tiles straight into the NCHW planes: with
    few pixels and many filters the threads split the filters into column tiles, each
    writing its own planes; every thread count gives the same bits, and the right ones."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 128, 5, 5)).astype(dtype)
    wt = rng.standard_normal((200, 128, 3, 3)).astype(dtype)
    b = rng.standard_normal(200).astype(dtype)
    kw = dict(padding=1)
    dy = rng.standard_normal(convcore.conv2d_output_shape(x.shape, wt.shape, **kw)).astype(dtype)
    results = []
    for threads in (1, 3, 8):
        convcore.set_num_threads(threads)
        with _force_implementations(**{pass_: "via_nhwc"}):
            if pass_ == "forward":
                results.append(convcore.conv2d(x, wt, b, activation="relu", **kw))
            else:
                results.append(convcore.conv2d_backward_input(dy, wt, x.shape, **kw))
    for other in results[1:]:
        assert np.array_equal(results[0], other)
    if pass_ == "forward":
        check_forward(results[0], x, wt, b, activation="relu", dtype=dtype,
                      what="via_nhwc column tiles", **kw)
    else:
        check_backward_input(results[0], dy, wt, x.shape, dtype=dtype,
                             what="via_nhwc column tiles", **kw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_rows_tap_limit_follows_vector_width(isa, dtype):
    """dense_rows_nchw takes up to 160 taps per group with 64-byte vectors (AVX-512) and
    up to 128 with 32-byte ones (AVX2, portable), whose kernels hold half the accumulators
    per tap: a 7×7 RGB layer (147 taps) runs there on the GEMM tiles. The layer each ISA
    runs is checked against the float64 direct loops."""
    name = np.dtype(dtype).name
    vector_bytes = convcore._core.config()["blocking"][name]["vector_bytes"]
    assert vector_bytes == (64 if isa == "avx512" else 32)
    kw = dict(stride=2, padding=3, shape_rule="crop")
    rng = np.random.default_rng(17)
    for (c, r, s), dense in (((3, 7, 7), vector_bytes >= 64), ((4, 6, 6), vector_bytes >= 64),
                             ((3, 5, 5), True), ((4, 4, 8), True), ((2, 9, 9), False)):
        x = rng.standard_normal((4, c, 19, 37)).astype(dtype)
        wt = rng.standard_normal((10, c, r, s)).astype(dtype)
        algos = _algorithms(x.shape, wt.shape, dtype=name, **kw)
        what = f"{c}×{r}×{s} = {c * r * s} taps on {isa}"
        for pass_ in ("forward", "backward_weight"):
            assert (algos[pass_] == "dense_rows_nchw") == dense, (what, algos)
        y = convcore.conv2d(x, wt, **kw)
        check_forward(y, x, wt, None, dtype=dtype, what=f"{what} fwd", **kw)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dw = convcore.conv2d_backward_weight(dy, x, wt.shape, **kw)
        check_backward_weight(dw, dy, x, wt.shape, dtype=dtype, what=f"{what} bwd-weight", **kw)


# (x shape NHWC, K, R×S, groups): few pixels (<= 256), so the channels-last tiles pack the
# weights given with each call as they go, a few panels at a time; more than 64 columns (a
# ragged last panel group) and, for the second, more than 1024 depth (two KC blocks).
LAZY_CASES = {
    "wide_1x1": ((1, 7, 7, 150), 150, 1, 1),
    "deep_3x3_groups": ((2, 5, 6, 260), 260, 3, 2),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("pass_", ["forward", "backward_data"])
@pytest.mark.parametrize("case", sorted(LAZY_CASES))
def test_weights_packed_as_they_go(isa, case, pass_, layout, dtype, restore_threads):
    """Few output pixels: the channels-last tiles (indirect_nhwc, and via_nhwc for NCHW)
    pack the weights of a call panel by panel as they go, instead of all up front. Their
    result must match the float64 loops, and be bitwise the one of the same primitive with
    its weights packed once up front (set_weights, as a Conv2d layer does), at any thread
    count."""
    (n, h, w_, c), k, rs, groups = LAZY_CASES[case]
    rng = np.random.default_rng(31)
    nchw = layout == "NCHW"
    x = rng.standard_normal((n, c, h, w_) if nchw else (n, h, w_, c)).astype(dtype)
    wshape = (k, c // groups, rs, rs) if nchw else (k, rs, rs, c // groups)
    wt = rng.standard_normal(wshape).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    kw = dict(padding=rs // 2, groups=groups, layout=layout)
    yshape = convcore.conv2d_output_shape(x.shape, wt.shape, **kw)
    dy = rng.standard_normal(yshape).astype(dtype)
    impl = "via_nhwc" if nchw else "indirect_nhwc"
    results = []
    for threads in (1, 2, 3):
        convcore.set_num_threads(threads)
        with _force_implementations(**{pass_: impl}):
            prob = _Problem(x.shape, wt.shape, 1, rs // 2, 1, groups, layout, "strict",
                            "float64" if dtype == np.float64 else "float32")
            assert prob.plan.algorithms[pass_] == impl
            as_given = np.empty(yshape if pass_ == "forward" else x.shape, dtype)
            packed = np.empty_like(as_given)
            prob.plan.set_weights(wt)
            if pass_ == "forward":
                prob.plan.forward(x, wt, b, as_given, True)
                prob.plan.forward(x, None, b, packed, True)
            else:
                prob.plan.backward_data(dy, wt, as_given)
                prob.plan.backward_data(dy, None, packed)
        assert np.array_equal(as_given, packed), f"{threads} threads"
        results.append(as_given)
    for other in results[1:]:
        assert np.array_equal(results[0], other)
    what = f"{case} {layout} {pass_}, weights packed as they go"
    if pass_ == "forward":
        check_forward(results[0], x, wt, b, activation="relu", dtype=dtype, what=what, **kw)
    else:
        check_backward_input(results[0], dy, wt, x.shape, dtype=dtype, what=what, **kw)


def test_rows_tiles_at_32_channels_follow_the_padding_share():
    """At 32 channels the forward takes indirect_nhwc_rows (one segment per kernel row) only
    where under 5 % of the products lie in the padding; else indirect_nhwc, whose regions
    skip them. Under 32 channels the rows tiles whatever the padding; above, never."""
    def first(x_shape, w_shape, **kw):
        impls = _implementations(x_shape, w_shape, layout="NHWC", **kw)["forward"]
        return next(d["name"] for d in impls if d["preferred"])
    # 3×3 pad 1 on 40×40: 1 - (118/120)² = 3.3 % padded
    assert first((2, 40, 40, 32), (16, 3, 3, 32), padding=1) == "indirect_nhwc_rows"
    # 5×5 pad 2 on 12×12: 1 - (54/60)² = 19 %
    assert first((2, 12, 12, 32), (16, 5, 5, 32), padding=2) == "indirect_nhwc"
    assert first((2, 12, 12, 24), (16, 5, 5, 24), padding=2) == "indirect_nhwc_rows"
    assert first((2, 40, 40, 40), (16, 3, 3, 40), padding=1) == "indirect_nhwc"
    # the decline names the rule
    impls = _implementations((2, 12, 12, 32), (16, 5, 5, 32), layout="NHWC", padding=2)
    rows = next(d for d in impls["forward"] if d["name"] == "indirect_nhwc_rows")
    assert not rows["preferred"] and "5 %" in rows["reason"]


def test_via_nhwc_forward_against_direct_from_300_flops_per_element():
    """The NCHW forward takes via_nhwc over direct_stride1 from 300 FLOPs per element of
    one image's x and y (2·K·Cin per pixel over Cin + K for a 1×1 kernel); backward-data
    keeps the bound of 1000."""
    def chosen(x_shape, w_shape, pass_="forward"):
        impls = _implementations(x_shape, w_shape, layout="NCHW")[pass_]
        return next(d["name"] for d in impls if d["preferred"])
    # 2·256·1024 / 1280 = 410 and 2·256·512 / 768 = 341: via_nhwc
    assert chosen((16, 1024, 14, 14), (256, 1024, 1, 1)) == "via_nhwc"
    assert chosen((8, 512, 28, 28), (256, 512, 1, 1)) == "via_nhwc"
    # 2·256·256 / 512 = 256 and 2·64·256 / 320 = 102: direct_stride1
    assert chosen((16, 256, 14, 14), (256, 256, 1, 1)) == "direct_stride1"
    assert chosen((16, 256, 56, 56), (64, 256, 1, 1)) == "direct_stride1"
    impls = _implementations((16, 256, 14, 14), (256, 256, 1, 1), layout="NCHW")
    via = next(d for d in impls["forward"] if d["name"] == "via_nhwc")
    assert not via["preferred"] and "300 FLOPs" in via["reason"]
    # backward-data: 410 is under its 1000
    assert chosen((16, 1024, 14, 14), (256, 1024, 1, 1), "backward_data") != "via_nhwc"


def test_via_nhwc_weight_gradient_on_wide_layers_but_1x1_and_batch_1():
    """The NCHW weight gradient runs through via_nhwc on wide layers (16 or more channels and
    over 32 filters per group) when the kernel is larger than 1×1, there are several images
    and at most 1024 output pixels per image; with a 1×1 kernel, one image or a larger
    output map the NCHW executors keep it."""
    def entry(x_shape, w_shape, **kw):
        impls = _implementations(x_shape, w_shape, layout="NCHW", **kw)["backward_weight"]
        chosen = next(d["name"] for d in impls if d["preferred"])
        via = next(d for d in impls if d["name"] == "via_nhwc")
        return chosen, via
    chosen, _ = entry((2, 64, 20, 20), (64, 64, 3, 3), padding=1)
    assert chosen == "via_nhwc"
    chosen, _ = entry((2, 32, 21, 21), (48, 32, 3, 3), stride=2, padding=1, shape_rule="crop")
    assert chosen == "via_nhwc"
    chosen, _ = entry((2, 64, 32, 32), (64, 64, 3, 3), padding=1)  # 1024 output pixels
    assert chosen == "via_nhwc"
    for x_shape, w_shape in [((2, 64, 20, 20), (64, 64, 1, 1)), ((1, 64, 20, 20), (64, 64, 3, 3)),
                             ((2, 64, 32, 33), (64, 64, 3, 3))]:
        chosen, via = entry(x_shape, w_shape, padding=w_shape[2] // 2)
        assert chosen != "via_nhwc" and via["applies"] and not via["preferred"]
        assert "1×1 kernel, one image or over 1024 output pixels per image" in via["reason"]


def test_via_nhwc_subpixel_backward_data_on_wide_strided_layers():
    """Strided NCHW backward-data runs subpixel_nhwc on transposed copies (via_nhwc_subpixel)
    when a group has 128 or more channels or filters, there are several images and at least
    500 FLOPs per element transposed; otherwise it declines, naming the rule."""
    def entry(x_shape, w_shape, **kw):
        impls = _implementations(x_shape, w_shape, layout="NCHW", shape_rule="crop",
                                 **kw)["backward_data"]
        chosen = next(d["name"] for d in impls if d["preferred"])
        via = next(d for d in impls if d["name"] == "via_nhwc_subpixel")
        return chosen, via
    # 3×3/2 c128→256 on 28×28: 768 FLOPs per element of dy and dx.
    chosen, _ = entry((2, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1)
    assert chosen == "via_nhwc_subpixel"
    # 3×3/2 c64→128: 384 per element.
    _, via = entry((2, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)
    assert via["applies"] and not via["preferred"] and "500 FLOPs per element" in via["reason"]
    _, via = entry((1, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1)
    assert via["applies"] and not via["preferred"] and "one image" in via["reason"]
    _, via = entry((2, 32, 40, 40), (32, 32, 5, 5), stride=2, padding=2)
    assert via["applies"] and not via["preferred"] and "fewer than 128" in via["reason"]
    _, via = entry((2, 128, 28, 28), (256, 128, 3, 3), stride=1, padding=1)
    assert not via["applies"] and "stride 1" in via["reason"]
    _, via = entry((2, 4, 28, 28), (256, 4, 3, 3), stride=2, padding=1)  # 4 channels
    assert not via["preferred"] and "fewer than 8 input channels" in via["reason"]
