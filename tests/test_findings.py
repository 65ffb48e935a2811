"""Every finding of the second red-team campaign (the high, medium and low findings of untrusted input:
reads, sizes, budgets, checkpoints, run folders, plugins, transfer, exit codes) and the tests that hold
it, in one table: a finding's regression tests are named here, and this test fails when one of them is
renamed or removed, so that a finding never silently loses its guard."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

FINDINGS: dict[str, list[str]] = {
    "H1 use reads and echoes files": [
        "language/test_untrusted_reads.py::test_h1_use_of_proc_is_refused_silently",
        "language/test_untrusted_reads.py::test_h1_spec_text_reads_nothing_outside_allow_paths",
        "language/test_untrusted_reads.py::test_h1_dotfiles_are_never_read",
        "language/test_untrusted_reads.py::test_h1_an_unparsable_used_file_is_named_not_shown",
    ],
    "H2 a small CIFAR pickle expands to gigabytes": [
        "runtime/test_untrusted_data.py::test_h2_a_sub_list_reused_deep_is_refused_before_any_array",
        "runtime/test_untrusted_data.py::test_h2_a_pickle_of_too_many_opcodes_is_refused_unpickled",
        "runtime/test_untrusted_data.py::test_h2_cifar_batches_are_read_bounded",
    ],
    "H3 checkpoint metadata chooses what eval loads": [
        "runtime/test_untrusted_data.py::test_h3_checkpoint_data_source_is_refused_before_reading",
        "runtime/test_untrusted_data.py::test_h3_anything_else_needs_data_named",
    ],
    "M1 no lock on --out": [
        "runtime/test_run_lock.py::test_m1_second_lock_on_a_live_run_is_refused_with_its_pid",
        "runtime/test_run_lock.py::test_m1_two_concurrent_trains_the_second_refused_the_first_completes",
    ],
    "M2 a compressed .pth inflates before transfer refuses it": [
        "compiler/test_transfer_atomic.py::test_m2_a_compressed_torch_file_is_refused_before_it_is_inflated",
        "compiler/test_transfer_atomic.py::test_m2_a_torch_files_members_are_bounded_by_their_sizes",
    ],
    "M3 window elaboration is quadratic": [
        "graph/test_sequential.py::test_m3_window_elaboration_is_linear_in_depth",
    ],
    "M4 FIFOs hang": [
        "runtime/test_untrusted_data.py::test_m4_read_bounded_refuses_a_fifo_without_waiting",
        "runtime/test_untrusted_data.py::test_m4_a_fifo_checkpoint_is_refused_without_waiting",
        "runtime/test_untrusted_data.py::test_m4_a_fifo_image_is_refused_not_waited_for",
        "cli/test_outputs_and_flags.py::test_output_to_a_fifo_is_refused",
    ],
    "M5 metrics.jsonl read unbounded on --resume": [
        "runtime/test_untrusted_data.py::test_m5_metrics_are_read_bounded",
        "runtime/test_untrusted_data.py::test_m5_malformed_metrics_are_refused_with_exit_2",
        "runtime/test_untrusted_data.py::test_m5_resume_with_a_bad_metrics_file_is_exit_2",
    ],
    "M6 digests are weak": [
        "runtime/test_checkpoint_digests.py::test_m6_stripped_digests_are_refused_unless_trusted",
        "runtime/test_checkpoint_digests.py::test_m6_relabelled_dtype_is_refused",
        "runtime/test_checkpoint_digests.py::test_m6_changed_metadata_is_refused",
        "runtime/test_checkpoint_digests.py::test_m6_nan_weight_is_refused_unless_allowed",
    ],
    "M7 the elaboration budget counts wall time": [
        "language/test_budgets.py::test_m7_wall_time_is_not_counted",
        "language/test_budgets.py::test_m7_thread_cpu_time_is_counted",
    ],
    "M8 the memory limit is total RAM; allocator failures exit 1": [
        "compiler/test_memory_limit.py::test_m8_the_default_limit_is_the_smallest_reading",
        "compiler/test_memory_limit.py::test_m8_a_step_above_the_free_memory_is_refused_by_default",
        "cli/test_exit_codes.py::test_m8_an_allocator_failure_is_exit_2_in_one_line",
        "cli/test_exit_codes.py::test_m8_an_out_of_memory_in_a_command_is_exit_2",
    ],
    "M9 transfer builds the target before opening the weights": [
        "compiler/test_transfer_atomic.py::test_m9_a_missing_weights_file_is_reported_before_the_target_is_built",
        "compiler/test_transfer_atomic.py::test_m9_max_memory_bounds_the_file_and_the_transfer_before_the_target_is_built",
    ],
    "M10 a plugin's sys.exit or BaseException escapes": [
        "graph/test_plugin_guard.py::test_m10_a_plugin_that_exits_or_raises_a_base_exception_while_loading_is_named",
        "graph/test_plugin_guard.py::test_m10_cli_with_a_plugin_that_calls_sys_exit_0_exits_2",
        "graph/test_plugin_guard.py::test_m10_an_error_inside_a_plugin_op_names_the_plugin",
    ],
    "M11 PIL only warns on decompression bombs": [
        "runtime/test_untrusted_data.py::test_m11_a_decompression_bomb_is_an_error_at_the_documented_pixel_count",
        "runtime/test_untrusted_data.py::test_m11_only_the_documented_formats_are_decoded_whatever_the_name",
    ],
    "Low: exit 1 for --max-memory of 400 nines": [
        "compiler/test_max_memory.py::test_a_size_beyond_any_machine_is_refused",
        "cli/test_max_memory_cli.py::test_a_meaningless_size_is_a_clear_error",
    ],
    "Low: exit 1 for --dynamic-batch 0:0:0": ["cli/test_exit_codes.py::test_dynamic_batch_0_0_0"],
    "Low: exit 1 for a 5,000-character use path": [
        "language/test_untrusted_reads.py::test_h1_a_very_long_use_path_is_refused_with_exit_2",
    ],
    "Low: exit 1 for transfer of sparse or quantized tensors": [
        "compiler/test_transfer_atomic.py::test_low_cli_transfer_of_a_sparse_tensor_exits_2",
    ],
    "Low: exit 1 for transfer -o into a missing folder": [
        "compiler/test_transfer_atomic.py::test_low_transfer_output_into_a_missing_folder_exits_2",
    ],
    "Low: exit 1 for bench --json to a folder or /dev/full": [
        "cli/test_exit_codes.py::test_bench_json_to_a_folder_or_dev_full",
    ],
    "Low: exit 1 for leaky_relu(1e308) in train and bench infer": [
        "zoo/test_zoo_words.py::test_a_leaky_slope_beyond_float32_is_a_located_error",
    ],
    "Low: exit 1 for a bad image found mid-training": [
        "runtime/test_data.py::test_unreadable_image_among_the_sampled_ones",
        "runtime/test_data.py::test_unreadable_image_is_one_line_naming_the_file",
    ],
    "Low: transfer half-writes the module; non-finite weights accepted": [
        "compiler/test_transfer_atomic.py::test_low_transfer_refuses_a_bad_late_tensor_and_changes_nothing",
        "compiler/test_transfer_atomic.py::test_m9_a_value_that_cannot_be_staged_leaves_the_module_unchanged",
        "runtime/test_checkpoint_digests.py::test_m6_nan_weight_is_refused_unless_allowed",
    ],
    "Low: -o handled five ways (devices, links, modes, late failures, temporaries)": [
        "cli/test_write_atomic.py::test_special_targets_are_refused_before_writing",
        "cli/test_write_atomic.py::test_a_link_is_written_through",
        "cli/test_write_atomic.py::test_a_new_file_gets_the_umasks_mode",
        "cli/test_write_atomic.py::test_transfer_output_gets_the_umasks_mode",
        "cli/test_write_atomic.py::test_a_failed_write_leaves_the_previous_file_and_no_temporary",
        "cli/test_outputs_and_flags.py::test_output_to_a_device_is_refused",
    ],
    "Low: any PIL format decoded under an image name": [
        "runtime/test_untrusted_data.py::test_m11_only_the_documented_formats_are_decoded_whatever_the_name",
    ],
    "Low: --allow-path \"\" means the working folder": [
        "cli/test_exit_codes.py::test_allow_path_empty_is_refused_not_the_working_folder",
    ],
    "Low: check accepts a 3.5e18-channel network": [
        "cli/test_exit_codes.py::test_check_refuses_a_3_5e18_channel_network",
    ],
    "Low: a 5,000-long alias chain is refused without a location": [
        "cli/test_exit_codes.py::test_a_5000_long_alias_chain_is_refused_with_a_location",
    ],
    "Low: a 3 GiB CIFAR batch is read whole": [
        "runtime/test_untrusted_data.py::test_h2_cifar_batches_are_read_bounded",
    ],
    "Low: temporaries of killed runs are left behind": [
        "runtime/test_run_lock.py::test_low_temporaries_of_a_killed_run_are_cleared_at_the_next_start",
        "runtime/test_untrusted_checkpoints.py::test_stale_temporaries_are_removed_on_the_next_save",
    ],
    "Campaign: files from strangers, fuzzed, read nothing outside the roots": [
        "runtime/test_fuzz_files.py::test_every_file_is_read_or_refused_within_its_bounds",
        "runtime/test_fuzz_files.py::test_reads_outside_the_roots_are_seen",
        "runtime/test_fuzz_files.py::test_long_campaign",
    ],
}


@lru_cache(maxsize=None)
def _tests_in(path: str) -> frozenset[str]:
    tree = ast.parse((TESTS / path).read_text())
    return frozenset(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))


@pytest.mark.parametrize("finding", list(FINDINGS))
def test_every_finding_has_its_regression_tests(finding):
    missing = [t for t in FINDINGS[finding] if t.split("::")[1] not in _tests_in(t.split("::")[0])]
    assert not missing, f"{finding}: no such test: {missing}"
