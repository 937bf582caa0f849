"""Shared pieces of the ``quadrant`` command line: the typer apps, the error guard, strict JSON output
with a metadata block, and ``--version`` / ``--debug``.

Exit codes: 0 ok, 1 a plan that does not fit / an SLO that is not met where asked / a run where nothing
finished, 2 bad input (a flag, a file, an output path). Every error is one line on stderr starting with
``error:``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import traceback
from pathlib import Path

import typer
from typer.core import TyperGroup

from ..errors import InfeasibleError, LayoutError, SimulatorError

_STATE: dict = {"debug": False, "argv": []}


def _click_exceptions():
    """The click exception classes typer raises (typer vendors click as ``typer._click`` in newer releases)."""
    mod = getattr(typer, "_click", None)
    if mod is None:  # pragma: no cover - older typer on plain click
        import click as mod
    return mod.exceptions


def reflow_help(text: str) -> str:
    """A docstring's help as paragraphs the terminal wraps: the line breaks of the source inside a paragraph
    are joined (typer's rich help keeps them, so a narrow terminal shows ragged lines), except where a
    line starts an example command (``quadrant ...``) or a list item (``- ...``)."""
    paragraphs = []
    for par in text.split("\n\n"):
        lines: list[str] = []
        for line in (x.strip() for x in par.splitlines()):
            if not line:
                continue
            if lines and not line.startswith(("quadrant ", "- ", "python ")):
                lines[-1] += " " + line
            else:
                lines.append(line)
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


_METAVARS = {"duration": "<duration>", "rate": "<rate>", "out_file": "<file>", "out_dir": "<folder>",
             "in_file": "<file>", "int_list": "<list>"}  # by the option's parser (simulator/cli/_params.py)


def _reflow_tree(cmd) -> None:
    """Help paragraphs reflowed to the terminal; flags listed without a value placeholder (typer shows
    ``<bool>`` for an on/off flag, which reads as if it took a value: ``--json true`` is an error)."""
    if cmd.help:
        cmd.help = reflow_help(cmd.help)
    for p in getattr(cmd, "params", ()):
        if getattr(p, "is_flag", False) and not getattr(p, "metavar", None):
            p.metavar = ""
        # values with units read as such, not as the bare number the annotation says
        info = getattr(getattr(p, "type_descriptor", None), "parameter_info", None)
        kind = getattr(getattr(info, "parser", None), "__name__", "")
        if kind in _METAVARS and not getattr(p, "metavar", None):
            p.metavar = _METAVARS[kind]
    _bare_help_flag(cmd)
    for sub in getattr(cmd, "commands", {}).values():
        _reflow_tree(sub)


def _bare_help_flag(cmd) -> None:
    """``--help`` listed without a value placeholder, as the other flags (click builds that option per call)."""
    make = cmd.get_help_option

    def get_help_option(ctx):
        opt = make(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = get_help_option


class QuadrantGroup(TyperGroup):
    """The root command: usage errors (bad flag values, unknown options) become one line and exit 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:  # the root's own flags (--debug, --version)
            if getattr(p, "is_flag", False) and not getattr(p, "metavar", None):
                p.metavar = ""
        _bare_help_flag(self)
        for sub in self.commands.values():
            _reflow_tree(sub)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        ex = _click_exceptions()
        args = list(sys.argv[1:] if args is None else args)
        _STATE["argv"] = ["quadrant", *args]
        args = _debug_first(args)
        _STATE["debug"] = args[:1] == ["--debug"]
        try:
            _refuse_empty_values(args)
            rv = super().main(args, prog_name or "quadrant", complete_var, standalone_mode=False, **extra)
        except ex.ClickException as exc:
            if _STATE["debug"]:
                traceback.print_exc()
            msg = exc.format_message()
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed; click's usual exit code 2
                code = 2
                if standalone_mode:
                    sys.exit(code)
                return code
            if isinstance(exc, ex.UsageError) and not isinstance(exc, ex.BadParameter) and exc.ctx is not None:
                msg = f"{msg} (see `{exc.ctx.command_path} --help`)"
            typer.echo(f"error: {one_line(msg)}", err=True)
            code = exc.exit_code if exc.exit_code not in (0, 1) else 2
            if standalone_mode:
                sys.exit(code)
            return code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            if standalone_mode:
                sys.exit(1)
            return 1
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class _FastCoercion:
    """Converts one option's value without typer's pydantic adapters (importing pydantic alone costs about as
    much as numpy): the option's ``parser`` (simulator/cli/_params.py) when it has one, else str/int/float/bool/
    Path as click would. Installed only on parameters of those plain types; anything else keeps typer's own."""

    def __init__(self, parser, annotation):
        self.parser, self.annotation = parser, annotation

    def coerce(self, value, param, ctx):
        multi = param.multiple or param.nargs == -1
        if value is None:
            return [] if multi else None
        if multi:
            return [self._one(v, param, ctx) for v in value]
        return self._one(value, param, ctx)

    def _one(self, v, param, ctx):
        try:
            if self.parser is not None:
                return self.parser(v)
            t = self.annotation
            if t is bool:
                if isinstance(v, bool):
                    return v
                text = str(v).strip().lower()
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off"):
                    return False
                raise typer.BadParameter(f"expected true or false, got {v!r}")
            if t is int:
                if isinstance(v, int) and not isinstance(v, bool):
                    return v
                try:
                    return int(str(v).strip(), 10)
                except ValueError:
                    raise typer.BadParameter(f"expected an integer, got {v!r}") from None
            if t is float:
                try:
                    return float(v)
                except (TypeError, ValueError):
                    raise typer.BadParameter(f"expected a number, got {v!r}") from None
            if t is Path:
                return v if isinstance(v, Path) else Path(str(v))
            return v if isinstance(v, str) else str(v)
        except typer.BadParameter as exc:
            exc.ctx, exc.param = exc.ctx or ctx, exc.param or param
            raise


_PLAIN = (str, int, float, bool, Path)


def _fast_coercion_for(param):
    import typing

    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    ann, info = desc.annotation, desc.parameter_info
    if typing.get_origin(ann) is list and len(typing.get_args(ann)) == 1:
        ann = typing.get_args(ann)[0]
    if ann in _PLAIN and desc.file_annotation is None and not getattr(info, "click_type", None):
        return _FastCoercion(getattr(info, "parser", None), ann)
    return None


def _install_fast_coercion() -> None:
    """Route typer's lazy per-parameter coercion (``get_runtime_param``) through ``_FastCoercion`` where it
    applies. If this typer has no such hook, nothing changes (typer's own coercion is used)."""
    try:
        from typer.core import _TyperParameter
    except ImportError:  # pragma: no cover - another typer layout
        return
    original = getattr(_TyperParameter, "get_runtime_param", None)
    if original is None or getattr(original, "_quadrant", False):  # pragma: no cover
        return

    def get_runtime_param(self):
        if getattr(self, "_runtime_param", None) is None:
            fast = _fast_coercion_for(self)
            if fast is not None:
                self._runtime_param = fast
        return original(self)

    get_runtime_param._quadrant = True
    _TyperParameter.get_runtime_param = get_runtime_param


_install_fast_coercion()


def _debug_first(args: list[str]) -> list[str]:
    """``--debug`` is the root command's flag, but it is taken anywhere before a ``--`` (``quadrant whatif ...
    --debug`` as ``quadrant --debug whatif ...``): moved to the front, once."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


def _refuse_empty_values(args: list[str]) -> None:
    """An option given an empty value (``--hardware ""``, ``--out=``) is an error, never "use the default"."""
    for i, a in enumerate(args):
        if a == "--":
            return
        if a.startswith("--") and a.endswith("=") and len(a) > 3:
            raise typer.BadParameter("expected a value, got an empty string", param_hint=f"'{a[:-1]}'")
        if a == "" and i > 0 and args[i - 1].startswith("-") and args[i - 1] not in ("-", "--"):
            raise typer.BadParameter("expected a value, got an empty string", param_hint=f"'{args[i - 1]}'")
        if a == "" and (i == 0 or not args[i - 1].startswith("-")):
            raise _click_exceptions().UsageError("an empty argument was given")


app = typer.Typer(
    cls=QuadrantGroup,
    help=("quadrant-sim: score LLM inference on a fleet before you buy it.\n\n"
          "Every model step is split into four quadrants - prefill x decode crossed with attention x FFN - "
          "and costed with an analytic roofline (datasheet peaks x measured/cited efficiencies + fixed "
          "per-kernel overhead + alpha-beta collectives). `whatif` scores one plan; `simulate` runs a "
          "discrete-event simulation of real traffic under an engine's batching policy (vLLM, SGLang, "
          "TensorRT-LLM); `sweep` searches plans; `plan` sizes and prices the cheapest fleet that meets your "
          "SLOs, and `compare` puts deployments side by side; `bench`/`validate`/`calibrate` check the "
          "numbers against real kernels and serving runs.\n\n"
          "Exit codes: 0 ok, 1 infeasible (does not fit, SLO not met, nothing finished), 2 bad input."),
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
hw_app = typer.Typer(help="Hardware profiles (hardware/<id>.yaml).", no_args_is_help=True)
model_app = typer.Typer(help="Model specs (workloads/models/<id>.yaml).", no_args_is_help=True)
bench_app = typer.Typer(help="The torch micro-benchmark harness (needs the `bench` extra).", no_args_is_help=True)
app.add_typer(hw_app, name="hw")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")


def _version(value: bool):
    if value:
        from .. import __version__

        typer.echo(f"quadrant-sim {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors (also "
                                                             "taken after the command)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    _STATE["debug"] = debug


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def guarded(fn):
    """Turn errors into one line on stderr and a non-zero exit (traceback with --debug): library errors
    exit 2 (1 for an infeasible plan); an OS error on a path exits 2; anything else is reported as an
    internal error, also on one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except _click_exceptions().ClickException:
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as the Python docs advise
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except BaseException as exc:  # noqa: BLE001 - the CLI's last line of defence
            if isinstance(exc, SystemExit):
                raise
            if _STATE["debug"]:
                traceback.print_exc()
            if isinstance(exc, SimulatorError):
                typer.echo(f"error: {one_line(exc)}", err=True)
                infeasible = isinstance(exc, InfeasibleError) and not isinstance(exc, LayoutError)
                raise typer.Exit(1 if infeasible else 2) from None
            if isinstance(exc, OSError):
                where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
                typer.echo(f"error: cannot access{where}: {exc.strerror or exc}", err=True)
                raise typer.Exit(2) from None
            if isinstance(exc, MemoryError):
                typer.echo("error: out of memory (reduce the number of requests or the sweep size)", err=True)
                raise typer.Exit(2) from None
            typer.echo(f"error: internal error {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the "
                       "traceback and report it)", err=True)
            raise typer.Exit(2) from None

    return wrapper


# -- strict JSON ------------------------------------------------------------------------------------

def clean_json(obj):
    """A copy of ``obj`` that ``json.dumps(allow_nan=False)`` accepts: NaN/inf -> None, numpy scalars and
    arrays -> Python, paths -> str, tuples -> lists, dict keys -> str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return clean_json(float(obj))
        if isinstance(obj, np.ndarray):
            return clean_json(obj.tolist())
    pd = sys.modules.get("pandas")
    if pd is not None and obj is pd.NA:
        return None
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def dumps(obj) -> str:
    return json.dumps(clean_json(obj), indent=2, allow_nan=False)


def emit_json(obj, metadata: dict | None = None) -> None:
    """Print strict JSON; a dict result gets ``metadata`` as its last key when given."""
    if metadata is not None and isinstance(obj, dict):
        obj = {**obj, "metadata": metadata}
    typer.echo(dumps(obj))


def file_sha256(path: str | Path) -> str | None:
    import hashlib

    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def metadata(*, seed=None, timing_model: str | None = "roofline", inputs: dict | None = None) -> dict:
    """The provenance block of every JSON result: version, seed, timing model, sha256 of the input files
    (catalogue ids resolved to their files) and the command line."""
    from .. import __version__

    hashes = {}
    for name, ref in (inputs or {}).items():
        refs = [x for x in (ref if isinstance(ref, (list, tuple)) else [ref]) if x]
        for i, r in enumerate(refs):
            path = _resolve_input(r, name)
            if path is not None:
                key = f"{name}[{i}]" if len(refs) > 1 else name
                hashes[key] = {"file": str(path), "sha256": file_sha256(path)}
    return {"version": __version__, "seed": seed, "timing_model": timing_model, "inputs": hashes,
            "command": list(_STATE["argv"])}


_FOLDERS = {"model": "workloads/models", "hardware": "hardware", "deployment": "workloads/deployments",
            "traffic": "workloads/traffic"}


def _resolve_input(ref, name: str) -> Path | None:
    p = Path(str(ref))
    if p.is_file():
        return p
    folder = _FOLDERS.get(name.split("_")[-1]) or _FOLDERS.get(name)
    if folder:
        from ..specs.catalog import catalog_root

        cand = catalog_root() / folder / f"{ref}.yaml"
        if cand.is_file():
            return cand
    return None


def emit_frame(df, json_out: bool) -> None:
    """A catalogue listing: JSON records or an aligned table."""
    if json_out:
        emit_json(df.to_dict(orient="records"))
    else:
        from ..report.render import table

        typer.echo(table(list(df.columns), df.astype(str).values.tolist()))


class _PlainDumper:  # built lazily: yaml is imported only when YAML is printed
    cls = None


def as_yaml(obj) -> str:
    """Plain block YAML: no anchors/aliases, no Python tags, NaN/inf as null."""
    import yaml

    if _PlainDumper.cls is None:
        class NoAliasDumper(yaml.SafeDumper):
            def ignore_aliases(self, data):
                return True

        _PlainDumper.cls = NoAliasDumper
    return yaml.dump(clean_json(obj), Dumper=_PlainDumper.cls, sort_keys=False, width=110,
                     allow_unicode=True).rstrip()


PRECISION_HELP = "bf16 | fp16 | fp32 | fp8 | int8 | w4a8 | w4a16 | fp4"


def timing_label(timing: str | None, calibration) -> str:
    """What a result's metadata says about the timing model it used."""
    from ..timing.calibrated import timing_spec_of

    return timing_spec_of(timing, calibration)


def timing_files(timing: str | None) -> list[str]:
    """The files a --timing choice reads (their hashes go into the metadata)."""
    from ..timing.calibrated import parse_timing_spec

    return [f for paths in parse_timing_spec(timing or "roofline").values() for f in paths]


def explicit_flags(ctx) -> set[str]:
    """Parameter names the user gave on the command line (not left at their defaults)."""
    # compared by name: typer may carry its own copy of click's ParameterSource
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
