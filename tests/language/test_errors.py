"""Bad specs give located errors, never Python exceptions: `archspec.SpecError` with the line and column
of the offending text, a message about the spec, and a rendering with the line and a caret under it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import archspec
from archspec import SpecError
from archspec.language.diagnostics import MISTAKES
from conftest import SPECS
from reference_counts import BY_NAME


def net(body: str, params: str = "", layers: str = "") -> str:
    """A small network whose body starts on line 3 (or later, after `layers`)."""
    return f"{layers}network n({params}) {{\n  input(3, 8, 8)\n  {body}\n}}\n"


def where(text: str, needle: str, nth: int = 0) -> tuple[int, int]:
    """1-based (line, column) of the `nth` occurrence of `needle` in `text`."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def error(text: str, **overrides) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.network(text, **overrides)
    return e.value


def full(e: SpecError) -> str:
    """Message and hint: everything the user reads."""
    return f"{e.message}\n{e.hint or ''}"


def check(text: str, needle: str, *words: str, nth: int = 0, **overrides) -> SpecError:
    """The spec fails at `needle` (its first character), saying each of `words`; the rendering shows the
    line with a caret under that character."""
    e = error(text, **overrides)
    assert e.loc is not None, e
    assert (e.loc.line, e.loc.column) == where(text, needle, nth), (e.render(), needle)
    for w in words:
        assert w in full(e), (w, e.render())
    shown = e.render({e.loc.file: text})
    lines = shown.splitlines()
    assert lines[0].startswith(f"{e.loc.file}:{e.loc.line}:{e.loc.column}: error: ")
    src = text.splitlines()[e.loc.line - 1]
    assert lines[1] == "    " + src
    caret = lines[2]
    assert caret.strip() and set(caret.strip()) == {"^"}
    assert caret.index("^") - 4 == e.loc.column - 1
    # the caret covers the offending text, not the rest of the line
    width = len(caret.strip())
    assert src[e.loc.column - 1:e.loc.column - 1 + width].startswith(needle[:width])
    return e


# ---- names -----------------------------------------------------------------------------------------


def test_unknown_name_with_did_you_mean():
    text = net("conv(dpeth, 1)", params="depth: int = 4")
    e = check(text, "dpeth", "unknown name 'dpeth'", "did you mean 'depth'")
    assert e.loc.end_column == e.loc.column + len("dpeth")


def test_unknown_name_inside_a_layer_template_says_templates_see_only_their_parameters():
    layers = "layer l(k: int) {\n  conv(width2, k)\n}\n"
    text = net("l(3)", params="width2: int = 8", layers=layers)
    check(text, "width2", "unknown name 'width2'", "layer 'l'", "pass the value as an argument")


def test_function_used_as_a_name():
    check(net("repeat range { relu }"), "range", "'range' is a function", "range(")


@pytest.mark.parametrize("word,suggestion", [
    ("cnov", "conv"), ("Conv", "conv"), ("BatchNorm2d", "bn"), ("batchnorm", "bn"), ("fc", "linear"),
    ("Linear", "linear"), ("maxpool2d", "maxpool"), ("global_avg_pool", "gap"), ("rleu", "relu"),
])
def test_unknown_op_suggests_the_op_meant(word, suggestion):
    e = check(net(f"{word}(8)"), word, f"unknown layer or op '{word}'", f"did you mean '{suggestion}'")
    assert e.loc.end_column == e.loc.column + len(word)  # the name, not the whole call


def test_unknown_op_suggests_layer_templates_too():
    text = net("compsite(4)", layers="layer composite(n: int) { conv(n, 1) }\n")
    check(text, "compsite", "did you mean 'composite'")


def test_unknown_op_with_nothing_close_lists_what_exists():
    e = check(net("zzzzzz"), "zzzzzz", "unknown layer or op")
    assert "ops: conv" in e.hint


def test_pattern_and_merge_words_used_as_ops():
    check(net("dense"), "dense", "connection pattern", "block dense")
    check(net("concat"), "concat", "is a merge")


@pytest.mark.parametrize("body,needle,words", [
    ("block dens concat { conv(4, 1) }", "dens", ["unknown connection pattern 'dens'", "did you mean 'dense'"]),
    ("block resnet { conv(3, 1) }", "resnet", ["unknown connection pattern", "did you mean 'residual'"]),
    ("block frobnicate { conv(3, 1) }", "frobnicate", ["unknown connection pattern", "patterns: chain"]),
    ("block concat { conv(3, 1) }", "concat", ["'concat' is a merge, not a connection pattern"]),
    ("block dense concta { conv(4, 1) }", "concta", ["unknown merge 'concta'", "did you mean 'concat'"]),
    ("block dense cat { conv(4, 1) }", "cat", ["unknown merge 'cat'", "did you mean 'concat'"]),
    ("block residual add { conv(3, 1) }", "add", ["unknown merge 'add'", "did you mean 'sum'"]),
    ("block dense residual { conv(3, 1) }", "residual", ["'residual' is a connection pattern, not a merge"]),
    ("block chain concat { conv(4, 1) }", "concat", ["pattern 'chain' takes no merge word"]),
])
def test_unknown_pattern_or_merge_word(body, needle, words):
    check(net(body), needle, *words)


def test_unknown_function():
    check(net("conv(flor(2.5), 1)"), "flor", "unknown function 'flor'", "did you mean 'floor'")
    check(net("conv(length([1]), 1)"), "length", "unknown function 'length'", "did you mean 'len'")


def test_a_spec_is_data_python_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    for body in ('conv(__import__("os"), 1)', 'conv(eval("1"), 1)',
                 f'conv(exec("open(\'{marker}\', \'w\')"), 1)'):
        e = error(net(body))
        assert "unknown function" in e.message
    # attribute access is not even syntax
    for body in (f'conv(__import__("os").system("touch {marker}"), 1)', "conv((1).__class__, 1)"):
        e = error(net(body))
        assert "unexpected character '.'" in e.message
    assert not marker.exists()


# ---- arguments and types ---------------------------------------------------------------------------


def test_type_mismatch_points_at_the_argument():
    e = check(net("conv(2.5, 3)"), "2.5", "conv: argument 'out' must be an int, got float 2.5")
    assert e.loc.end_column == e.loc.column + 3


def test_bool_is_not_an_int():
    check(net("conv(true, 3)"), "true", "argument 'out' must be an int, got bool true")


def test_type_mismatch_in_a_named_argument():
    check(net("conv(8, 3, padding=1.5)"), "padding=1.5", "argument 'padding' must be an int")
    check(net("conv(8, 3, bias=1)"), "bias=1", "argument 'bias' must be true or false")


@pytest.mark.parametrize("body,needle,words", [
    ("conv(0, 3)", "0", ["conv: argument 'out' must be positive, got int 0"]),
    ("conv(-4, 3)", "-4", ["argument 'out' must be positive"]),
    ("conv(8, 0)", "0", ["argument 'kernel' must be positive"]),
    ("conv(8, 3, stride=0)", "stride=0", ["argument 'stride' must be positive"]),
    ("conv(8, 3, padding=-1)", "padding=-1", ["argument 'padding' must not be negative"]),
    ("gap linear(0)", "0", ["linear: argument 'out' must be positive"]),
    ("dropout(1.5)", "1.5", ["dropout: argument 'p' must be at most 1"]),
    ("bn(eps=0.0)", "eps=0.0", ["bn: argument 'eps' must be positive"]),
])
def test_non_positive_sizes(body, needle, words):
    check(net(body), needle, *words)


def test_non_positive_input_dimension():
    text = "network n() {\n  input(3, 0, 8)\n}\n"
    check(text, "0", "input dimensions must be positive, got 0")
    check("network n() {\n  input(3, 8, 2.5)\n}\n", "2.5", "input dimensions must be ints")


def test_input_must_come_first():
    check("network n() {\n  conv(8, 1)\n}\n", "conv", "must start with input(C, H, W)")
    check(net("input(3, 8, 8)"), "input", "input(...) can only be the first statement", nth=1)


def test_unknown_keyword_argument_points_at_it():
    e = check(net("conv(8, 3, paddng=1)"), "paddng", "conv has no argument 'paddng'", "did you mean 'padding'")
    assert e.loc.end_column == e.loc.column + len("paddng=1")


def test_too_many_positional_arguments():
    check(net("relu(1)"), "1", "relu takes no arguments, got 1")
    check(net('conv(8, 3, 1, 1, 1, false, "normal", 0.1, "zeros", 7)'), "7", "conv takes at most 9 arguments")
    check(net('conv(8, 3, 1, 1, 1, false, "zeros", 7)'), "7", "argument 'std' sets the spread of init=\"normal\"")
    check(net('conv(8, 3, init="glorot")'), 'init="glorot"', "must be one of 'default', 'he_normal', 'he_normal_in'",
          "got str \"glorot\"")


def test_argument_given_twice():
    check(net("conv(8, out=8)"), "out=8", "argument 'out' is given twice")
    check(net("conv(8, padding=1, padding=2)"), "padding", "argument 'padding' is given twice", nth=1)


def test_positional_after_named():
    check(net("conv(out=8, 3)"), "3)", "a positional argument cannot follow a named one")


LAYER = "layer unit(c: int, k: int = 3) {\n  conv(c, k, padding=k // 2)\n}\n"


def test_layer_template_with_too_many_arguments():
    check(net("unit(8, 3, 1)", layers=LAYER), "1)", "layer 'unit' takes 2 arguments (c, k), got 3")


def test_layer_template_missing_an_argument():
    check(net("unit(k=1)", layers=LAYER), "unit", "layer 'unit' needs argument 'c'", nth=1)


def test_layer_template_unknown_named_argument():
    check(net("unit(8, kk=1)", layers=LAYER), "kk", "layer 'unit' has no parameter 'kk'", "did you mean 'k'")


def test_layer_template_argument_of_the_wrong_type():
    check(net("unit(8.5)", layers=LAYER), "8.5", "argument 'c' of layer 'unit' must be an int, got float 8.5")
    check(net('unit("8")', layers=LAYER), '"8"', "argument 'c' of layer 'unit' must be an int, got str")


def test_layer_template_argument_given_twice():
    check(net("unit(8, c=8)", layers=LAYER), "c=8", "argument 'c' is given twice")


def test_parameter_with_no_default():
    text = net("conv(c, 1)", params="c: int")
    check(text, "c: int", "parameter 'c' has no default and was not set", "--set c=")
    assert archspec.network(text, c=4).params["c"] == 4


def test_default_of_the_wrong_type():
    check(net("conv(c, 1)", params="c: int = 2.5"), "2.5", "the default of parameter 'c' must be an int")
    check(net("relu", params='s: shape = [3, 0]'), "[3, 0]", "must be a shape")


def test_override_of_an_unknown_parameter_points_at_the_network():
    text = net("conv(width2, 1)", params="width2: int = 4")
    check(text, "n(", "network 'n' has no parameter 'widht2'", "did you mean 'width2'", widht2=8)


def test_override_of_the_wrong_type_points_at_the_parameter():
    text = net("conv(c, 1)", params="c: int = 4")
    check(text, "c: int", "the value set for parameter 'c' must be an int, got float 1.5", c=1.5)
    check(text, "c: int", "must be an int, got bool true", c=True)


def test_override_of_an_aliased_network_reports_the_alias():
    e = error(SPECS / "delugenet146.arch", clases=100)
    assert e.loc.file.endswith("delugenet146.arch") and e.loc.line == 4
    assert "did you mean 'classes'" in e.hint
    e = error(SPECS / "delugenet146.arch", classes="ten")
    assert Path(e.loc.file).resolve() == (SPECS / "lib" / "delugenet.arch").resolve()
    assert "must be an int" in e.message
    assert "classes" in e.render().splitlines()[1]  # the declaration is shown


def test_condition_must_be_a_bool():
    check(net("if 1 { relu }"), "1", "a condition must be true or false, got int 1")


def test_index_out_of_range_and_division_by_zero():
    check(net("conv(xs[3], 1)", params="xs: list = [1, 2]"), "3]", "index 3 is out of range")
    check(net("conv(8 // 0, 1)"), "8 // 0", "division by zero")
    check(net('conv("a" + 1, 1)'), '"a" + 1', "'+' needs a number, got str")


def test_function_arguments():
    check(net("conv(floor(1, 2), 1)"), "2)", "floor takes 1 argument, got 2")
    check(net("for i in range(1, 2, 0) { relu }"), "range", "the step must not be zero")
    check(net("conv(max(), 1)"), "max", "max takes at least 1 argument, got 0")


# ---- shapes ----------------------------------------------------------------------------------------


def test_groups_must_divide_the_channels():
    check(net("conv(8, 3, groups=2)"), "conv", "shapes cannot meet", "groups=2 must divide",
          "input channels (3)", "3×8×8")


def test_kernel_larger_than_the_input():
    check(net("conv(8, 11)"), "conv", "shapes cannot meet", "kernel 11", "3×8×8")


def test_image_op_after_flattening():
    check(net("gap bn"), "bn", "shapes cannot meet", "bn needs a C×H×W input, got 3")


def test_pool_padding_too_large():
    check(net("maxpool(3, 2, 5)"), "maxpool", "padding 5 must be at most half the kernel 3")


# ---- control flow and definitions -------------------------------------------------------------------


def test_repeat_with_a_negative_count():
    e = check(net("repeat -2 { relu }"), "-2", "repeat needs a non-negative int, got int -2")
    assert e.loc.end_column == e.loc.column + 2
    check(net("repeat 2.5 { relu }"), "2.5", "repeat needs a non-negative int, got float 2.5")


def test_for_needs_a_list():
    check(net("for i in 3 { relu }"), "3 {", "for needs a list")


def test_recursion_in_templates():
    text = net("loop", layers="layer loop() {\n  relu loop\n}\n")
    e = check(text, "loop", "layer 'loop' calls itself without end", nth=1)
    assert "64" in e.hint


def test_mutual_recursion_in_templates():
    text = net("ping", layers="layer ping() { pong }\nlayer pong() { ping }\n")
    e = error(text)
    assert "calls itself through" in e.message and e.loc.line in (1, 2)


def test_bounded_recursion_is_fine():
    layers = "layer stack(k: int) {\n  if k > 0 { relu stack(k - 1) }\n}\n"
    g = archspec.network(net("stack(10)", layers=layers))
    assert sum(1 for n in g.nodes() if n.op == "relu") == 10


def test_layer_defined_twice():
    text = "layer l() { relu }\nlayer l() { bn }\n" + net("l")
    e = check(text, "l()", "layer 'l' is defined twice", nth=1)
    assert "first defined at <spec>:1:7" in e.hint


def test_network_defined_twice_and_name_clashes():
    text = "network n() {\n  input(3, 8, 8)\n}\n" + net("relu")
    check(text, "n()", "network 'n' is defined twice", nth=1)
    check("layer conv(a: int = 1) { relu }\n" + net("relu"), "conv", "'conv' is a built-in op")
    check("layer n() { relu }\n" + net("relu"), "n(", "'n' is already a layer", nth=1)


def test_parameter_declared_twice():
    check(net("relu", params="a: int = 1, a: int = 2"), "a: int = 2", "parameter 'a' is declared twice")


def test_network_alias_errors():
    base = "network a(x: int = 1) {\n  input(3, 8, 8)\n}\n"
    check(base + "network b = aa(x=2)\n", "aa", "unknown network 'aa'", "did you mean 'a'")
    check(base + "network b = a(y=2)\n", "y=2", "network 'a' has no parameter 'y'")
    check(base + "network b = a(1, 2)\n", "2)", "network 'a' takes 1 parameter (x), got 2")
    check("network b = c()\nnetwork c = b()\n", "c()", "network 'c' is defined in terms of itself: c → b → c")


def test_no_network_and_empty_specs():
    check("layer l() { relu }\n", "layer", "defines no network")
    for text in ("", "   \n\n"):
        e = error(text)
        assert "empty" in e.message and (e.loc.line, e.loc.column) == (1, 1)
        assert e.render().splitlines()[2].strip() == "^"
    assert "defines no network" in error("# only a comment\n").message


def test_nested_block_directly_inside_a_block():
    check(net("block chain { block chain { relu } }"), "block chain {", "a nested block", nth=1)


# ---- files -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        archspec.parse(tmp_path / "nope.arch")
    with pytest.raises(SpecError, match="is a directory"):
        archspec.parse(tmp_path)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.arch"
    f.write_text("")
    e = error(f)
    assert e.loc.file == str(f) and (e.loc.line, e.loc.column) == (1, 1) and "empty" in e.message


def test_binary_and_non_utf8_files(tmp_path):
    f = tmp_path / "model.arch"
    f.write_bytes(b"network n() {\x00\x01\x02}")
    e = error(f)
    assert "binary file" in e.message and (e.loc.file, e.loc.line, e.loc.column) == (str(f), 1, 14)
    assert e.render().endswith("    network n() {\ufffd\ufffd\ufffd}\n                 ^\n  expected text: a spec holds no NUL bytes")
    # the column counts characters: the two-byte é before the bad byte is one column
    f.write_bytes(b"network n() {\n  input(3, 8, 8) # caf\xc3\xa9 \xe9\n}\n")
    e = error(f)
    assert "not UTF-8 text: byte 0xe9" in e.message and (e.loc.line, e.loc.column) == (2, 25)
    shown, caret = e.render().splitlines()[1:3]
    assert shown.endswith("# caf\u00e9 \ufffd") and caret.index("^") == shown.index("\ufffd")


def test_byte_order_mark_and_crlf_are_fine(tmp_path):
    f = tmp_path / "bom.arch"
    f.write_bytes("\ufeffnetwork n() {\r\n  input(3, 8, 8)\r\n  relu\r\n}\r\n".encode())
    assert archspec.network(f).name == "n"


def test_missing_used_file_points_at_the_use(tmp_path):
    main = tmp_path / "main.arch"
    main.write_text('use "lib/missing.arch"\n' + net("relu"))
    e = error(main)
    assert (e.loc.file, e.loc.line, e.loc.column) == (str(main), 1, 1)
    assert "no such spec file: 'lib/missing.arch'" in e.message
    assert 'use "lib/missing.arch"' in e.render()


def test_use_cycle(tmp_path):
    (tmp_path / "a.arch").write_text('use "b.arch"\nlayer la() { relu }\n')
    (tmp_path / "b.arch").write_text('# b\nuse "a.arch"\nlayer lb() { relu }\n')
    main = tmp_path / "main.arch"
    main.write_text('use "a.arch"\n' + net("la"))
    e = error(main)
    assert "`use` cycle: a.arch → b.arch → a.arch" in e.message
    assert Path(e.loc.file).resolve() == (tmp_path / "b.arch").resolve() and e.loc.line == 2
    assert 'use "a.arch"' in e.render()


def test_a_file_that_uses_itself(tmp_path):
    main = tmp_path / "self.arch"
    main.write_text('use "self.arch"\n' + net("relu"))
    e = error(main)
    assert "`use` cycle: self.arch → self.arch" in e.message and e.loc.line == 1


def test_error_in_a_used_file_is_located_there(tmp_path):
    lib = tmp_path / "lib.arch"
    lib.write_text("layer unit(c: int) {\n  conv(c, 3, paddin=1)\n}\n")
    main = tmp_path / "main.arch"
    main.write_text('use "lib.arch"\n' + net("unit(4)"))
    e = error(main)
    assert Path(e.loc.file).resolve() == lib.resolve() and e.loc.line == 2
    assert "    conv(c, 3, paddin=1)" in e.render()
    # a syntax error there too
    lib.write_text("layer unit(c: int) {\n  conv(c 3)\n}\n")
    e = error(main)
    assert Path(e.loc.file).resolve() == lib.resolve() and (e.loc.line, e.loc.column) == (2, 10)


def test_used_files_are_named_relative_to_the_working_folder(monkeypatch):
    monkeypatch.chdir(SPECS.parent)
    e = error("specs/delugenet146.arch", classes="ten")
    assert e.loc.file == "specs/lib/delugenet.arch"
    assert e.render().startswith("specs/lib/delugenet.arch:")


def test_use_of_a_binary_file_points_at_the_byte_and_names_the_use(tmp_path):
    (tmp_path / "lib.arch").write_bytes(b"layer a() {\n\x00\x00")
    main = tmp_path / "main.arch"
    main.write_text('use "lib.arch"\n' + net("relu"))
    e = error(main)
    assert "binary file" in e.message and e.loc.file.endswith("lib.arch") and (e.loc.line, e.loc.column) == (2, 1)
    assert e.hint.endswith(f"the file is used at {main}:1:1")


# ---- size limit ------------------------------------------------------------------------------------


def test_parameter_limit_refuses_before_allocating(monkeypatch):
    import archspec.compiler.codegen as codegen

    def no_allocation(*a, **k):
        raise AssertionError("a module was built")

    monkeypatch.setattr(codegen, "to_module", no_allocation)
    with pytest.raises(SpecError, match=f"{BY_NAME['delugenet146'].params:,} parameters, above the limit of 1,000"):
        archspec.build(SPECS / "delugenet146.arch", max_params=1000)
    huge = net("conv(100000, 3) conv(100000, 3)")  # 90 billion parameters: refused, never allocated
    with pytest.raises(SpecError, match="above the limit of 2,000,000,000"):
        archspec.build(huge)


# ---- runaway specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body,needle,words", [
    ("repeat 100000000000 { relu }", "100000000000", ["too many"]),
    ("for i in range(1000000000) { relu }", "range", ["too long"]),
    ("let a = [1] * 1000000000", "[1]", ["too long"]),
    ("conv(99999999999999999999999, 1)", "9999", ["too large"]),
    ("conv(1e400, 1)", "1e400", ["too large"]),
    ("conv(int(1e308 * 10), 1)", "1e308 * 10", ["too large"]),
    ("conv(round(1e300), 1)", "round", ["too large"]),
])
def test_runaway_values(body, needle, words):
    check(net(body), needle, *words)


def test_runaway_loops_and_templates_end_in_an_error():
    layers = "layer t(k: int) {\n  if k > 0 { t(k - 1) t(k - 1) }\n}\n"
    e = error(net("t(40)", layers=layers))  # 2^40 calls
    assert "more than" in e.message and e.loc is not None


def test_deep_nesting_is_an_error_not_a_crash():
    e = error(net("let a = " + "[" * 3000 + "]" * 3000))
    assert "nest" in e.message and e.loc.line == 3
    e = error(net("let a = " + "+".join(["1"] * 5000)))
    assert "nests more than" in e.message and e.loc.line == 3
    e = error(net("let a = " + "-" * 3000 + "1"))
    assert "nest" in e.message


# ---- syntax ----------------------------------------------------------------------------------------


EXAMPLES = [(label, example) for label, examples in MISTAKES.items() for example in examples]


@pytest.mark.parametrize("label,example", EXAMPLES)
def test_each_syntax_mistake_gets_its_message(label, example):
    with pytest.raises(SpecError) as e:
        archspec.parse(example + "\n")  # a newline: spec text, never a file name
    err = e.value
    assert label in err.message, err.render()
    assert err.message.startswith("unexpected"), err.message
    lines = example.splitlines() or [""]
    assert 1 <= err.loc.line <= len(lines)
    assert 1 <= err.loc.column <= len(lines[err.loc.line - 1]) + 1
    assert "^" in err.render()
    assert err.hint and "expected" in err.hint


@pytest.mark.parametrize("label,example", [(l, x) for l, x in EXAMPLES if x.startswith("network n() { ")])
def test_syntax_mistakes_after_other_statements(label, example):
    """The same mistake later in a body (a deeper parser stack) gets the same message."""
    text = example.replace("network n() { ", "network n() {\n  input(3, 8, 8)\n  relu\n  ", 1)
    with pytest.raises(SpecError) as e:
        archspec.parse(text)
    assert label in e.value.message, e.value.render()


def test_syntax_error_location_and_expected_tokens():
    text = "network n() {\n  input(3, 8, 8)\n  conv(8 3)\n}\n"
    e = check_syntax(text, "3)", "a ',' is missing between arguments")
    assert "expected ')', ','" in e.hint


def check_syntax(text: str, needle: str, *words: str) -> SpecError:
    with pytest.raises(SpecError) as e:
        archspec.parse(text)
    err = e.value
    assert (err.loc.line, err.loc.column) == where(text, needle), err.render()
    for w in words:
        assert w in full(err), err.render()
    lines = err.render().splitlines()
    assert lines[1] == "    " + text.splitlines()[err.loc.line - 1]
    assert lines[2].index("^") - 4 == err.loc.column - 1
    return err


def test_unexpected_character():
    e = check_syntax(net("conv(8, 3) $"), "$", "unexpected character '$'")
    assert "expected" in e.hint
    check_syntax(net("conv(8 @ 3)"), "@", "unexpected character '@'")


def test_unterminated_string_and_single_quotes():
    check_syntax(net('conv("abc, 1)'), '"abc', "a string is not closed")
    check_syntax("use 'lib.arch'\n", "'lib", "double quotes")


def test_unexpected_end_of_file_points_past_the_last_character():
    text = "network n() {\n  input(3, 8, 8)\n  conv(8, 3"
    with pytest.raises(SpecError) as e:
        archspec.parse(text)
    err = e.value
    assert err.message.startswith("unexpected end of file")
    assert "a ')' is missing" in err.message
    assert (err.loc.line, err.loc.column) == (3, len("  conv(8, 3") + 1)
    text = "network n() {\n  input(3, 8, 8)\n  conv(8, 3)\n\n# trailing comment\n"
    with pytest.raises(SpecError) as e:
        archspec.parse(text)
    assert "a '}' is missing" in e.value.message
    assert (e.value.loc.line, e.value.loc.column) == (3, len("  conv(8, 3)") + 1)


def test_reserved_word_as_a_name():
    e = check_syntax("network in() {\n  input(3, 8, 8)\n}\n", "in()", "'in' is a reserved word")
    assert "expected a name" in e.hint
    check_syntax(net("let block = 1"), "block =", "'block' is a reserved word")


def test_misspelt_keyword_and_type():
    check_syntax("netwrok n() {\n  input(3, 8, 8)\n}\n", "netwrok", "did you mean 'network'")
    check_syntax("network n(a: integer = 1) {\n  input(3, 8, 8)\n}\n", "integer",
                 "a parameter type must be one of", "did you mean 'int'")


def test_a_brace_too_many():
    text = net("relu") + "}\n"
    with pytest.raises(SpecError) as e:
        archspec.parse(text)
    assert "a top-level item must be" in e.value.message and e.value.loc.line == 5


# ---- rendering ---------------------------------------------------------------------------------------


def test_render_with_explicit_sources_and_without():
    text = net("conv(8, 3, paddng=1)")
    e = error(text)
    shown = e.render({"<spec>": text})
    assert shown == e.render()  # the sources travel with the error
    assert shown.splitlines() == [
        "<spec>:3:14: error: conv has no argument 'paddng'",
        "      conv(8, 3, paddng=1)",
        "                 ^^^^^^^^",
        "  did you mean 'padding'?",
    ]
    assert str(e).startswith("<spec>:3:14: conv has no argument 'paddng'")


def test_render_cuts_very_long_lines_around_the_column():
    text = net("let a = [" + ", ".join(["1"] * 400) + "] let b = zz")
    e = error(text)
    line, caret = e.render().splitlines()[1:3]
    assert len(line) < 200 and "…" in line
    assert line[caret.index("^"):].startswith("zz")


def test_tabs_keep_the_caret_aligned():
    text = "network n() {\n\tinput(3, 8, 8)\n\tconv(8, 3, paddng=1)\n}\n"
    e = error(text)
    line, caret = e.render().splitlines()[1:3]
    assert line[caret.index("^"):].startswith("paddng")


# ---- robustness: broken variants of a real spec only ever give SpecError ------------------------------


def _variants(text: str):
    for i in range(0, len(text), 47):
        yield text[:i]  # truncated
    for i in range(3, len(text), 41):
        yield text[:i] + text[i + 1:]  # one character dropped
    for i in range(5, len(text), 53):
        yield text[:i] + "(" + text[i:]  # one character added
    for a, b in [("n - 1", "n - 1.5"), ("range(3)", "range(3.0)"), ("widths[0]", "widths[9]"),
                 ("2 * n", "n // 0"), ("padding=1", "padding=n - 9"), ("crossdepthwise", "crossdepth"),
                 ("int = 10", "int = -10"), ("bn relu gap", "gap bn relu")]:
        yield text.replace(a, b)


def test_broken_specs_only_give_spec_errors():
    text = (SPECS / "lib" / "delugenet.arch").read_text()
    text = text.replace("network delugenet_imagenet", "network imagenet_unused")  # build the CIFAR one
    text = text[: text.index("network imagenet_unused")]
    for variant in _variants(text):
        try:
            archspec.network(variant)
        except SpecError as e:
            rendered = e.render()
            assert "Traceback" not in rendered
            if e.loc is not None:
                assert re.match(r"<spec>:\d+:\d+: error: ", rendered), rendered
