"""facelab's command line: stage, check-params, params, metrics-gate, results, workers-config, predict, demo, export.

Every command runs through ``facelab.runner.guarded``: errors a user can fix (``FacelabError``)
print as one line, ``facelab: error: ...``, and exit with status 1; ``--debug`` (or
``FACELAB_DEBUG=1``) shows the traceback. Ctrl-C or SIGTERM exits with 130. A command whose optional
dependencies (an extra of pyproject.toml: ``_check_extras``) are not installed is one such line too,
checked (``facelab.extras``) before the command's module is imported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Sequence

from facelab.config import load_params
from facelab.extras import DEMO_MODULES, ONNX_EXPORT_MODULES, ONNX_RUNTIME_MODULES, require
from facelab.nn import tf_config
from facelab.runner import guarded


def _cmd_stage(args) -> None:
    module, function = STAGES[args.name]
    getattr(importlib.import_module(module), function)(load_params(args.params))


STAGES = {
    "prepare": ("facelab.pipeline.prepare", "run"),
    "augment": ("facelab.pipeline.augment", "run"),
    "train_keypoints": ("facelab.pipeline.train", "run_keypoints"),
    "train_emotion": ("facelab.pipeline.train", "run_emotion"),
    "evaluate": ("facelab.pipeline.evaluate", "run"),
    "combine": ("facelab.pipeline.combine", "run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelab", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml runs)")
    p.add_argument("name", choices=sorted(STAGES))
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(handler=_cmd_stage)
    p = sub.add_parser("check-params", help="validate params.yaml and exit")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(handler=lambda a: load_params(a.params) and print(f"{a.params}: ok"))
    p = sub.add_parser("params", help="edit params.yaml")
    params_sub = p.add_subparsers(dest="action", required=True)
    q = params_sub.add_parser("apply", help="merge a profile of overrides (profiles/*.yaml) into params.yaml")
    q.add_argument("profile")
    q.add_argument("--params", default="params.yaml")
    q.set_defaults(handler=_cmd_params_apply)
    q = params_sub.add_parser("sets", help="print a profile as `dvc exp run -S` arguments")
    q.add_argument("profile")
    q.set_defaults(handler=_cmd_params_sets)
    p = sub.add_parser(
        "metrics-gate",
        help="compare metrics and params with a baseline revision (CI); "
        "exit 1 when a gated metric regressed past params.yaml gate:",
    )
    p.add_argument("--baseline", metavar="REV", help="git revision to compare with (default: gate.baseline)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", metavar="FILE", help="also write the Markdown report to FILE")
    p.add_argument("--strict", action="store_true", help="exit 2 when the baseline has no metrics")
    p.set_defaults(
        handler=lambda a: __import__("facelab.reports.gate").reports.gate.run(a.baseline, a.params, a.out, a.strict)
    )
    p = sub.add_parser("workers-config", help="TF_CONFIG of one worker of a multi-worker training (docs/devices.md)")
    tf_config.add_arguments(p)
    p.set_defaults(handler=lambda a: print(tf_config.render(a.hosts, a.index, a.export)))
    p = sub.add_parser(
        "results", help="the results table (Markdown) and accuracy-vs-minutes picture from the MLflow store"
    )
    p.add_argument("--out", metavar="DIR", help="also write DIR/results.md and DIR/accuracy-vs-minutes.png")
    p.add_argument("--experiment", help="MLflow experiment (default: params' tracking.experiment)")
    p.add_argument("--all", action="store_true", help="include runs on the synthetic faces")
    p.add_argument("--evaluated", action="store_true", help="only runs whose model was scored on its test set")
    p.add_argument(
        "--phases", action="store_true", help="also the minutes of every stage run's phases (load, train, ...)"
    )
    p.add_argument(
        "--level",
        action="append",
        metavar="METRIC=VALUE",
        help="also each training run's minutes to this validation level, e.g. val_accuracy=0.65 (repeatable)",
    )
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(handler=_cmd_results)
    p = sub.add_parser("predict", help="keypoints and emotion of every face in photos (annotated copies + JSON)")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--out", default="predictions", metavar="DIR", help="output folder (default: predictions)")
    p.add_argument("--json", action="store_true", help="print all records as JSON on stdout")
    p.add_argument("--keypoints-model", metavar="URI", help="MLflow model URI or .keras file (default: champion)")
    p.add_argument("--emotion-model", metavar="URI", help="MLflow model URI or .keras file (default: champion)")
    p.add_argument("--classes", help="the emotion model's classes, a,b,c (default: params' data.emotion.classes)")
    p.add_argument("--runtime", **RUNTIME)
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(handler=_cmd_predict)
    p = sub.add_parser("demo", help="a web page on 127.0.0.1: upload a photo or take one with the webcam (Gradio)")
    p.add_argument("--port", type=int, default=7860, help="default: 7860")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--keypoints-model", metavar="URI", help="as for predict (default: champion)")
    p.add_argument("--emotion-model", metavar="URI", help="as for predict (default: champion)")
    p.add_argument("--classes", help="as for predict")
    p.add_argument("--runtime", **RUNTIME)
    p.add_argument("--max-file-mb", type=float, default=25, metavar="MB", help="largest upload (default: 25)")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(handler=_cmd_demo)
    p = sub.add_parser("export", help="export the champion models")
    export_sub = p.add_subparsers(dest="format", required=True)
    q = export_sub.add_parser(
        "onnx",
        help="both champions as ONNX files (test-time averaging included), checked against Keras on test "
        "faces and logged to MLflow beside their Keras versions",
    )
    q.add_argument("--out", default="models/onnx", metavar="DIR", help="output folder (default: models/onnx)")
    q.add_argument("--no-log", action="store_true", help="only write the files (nothing logged to MLflow)")
    q.add_argument("--params", default="params.yaml")
    q.set_defaults(handler=_cmd_export_onnx)
    return parser


RUNTIME = {
    "choices": ("keras", "onnx"),
    "default": "keras",
    "help": "keras (default), or onnx: ONNX Runtime on the files `facelab export onnx` wrote (no TensorFlow)",
}


def _classes(args) -> list[str] | None:
    return [c.strip() for c in args.classes.split(",")] if args.classes else None


def _check_extras(args) -> None:
    """A FacelabError naming the extra to install when the command needs one that is missing."""
    if args.command == "demo":
        require("demo", DEMO_MODULES, "facelab demo")
    if getattr(args, "runtime", None) == "onnx":
        require("onnx", ONNX_RUNTIME_MODULES, f"facelab {args.command} --runtime onnx")
    if args.command == "export" and args.format == "onnx":
        require("onnx", ONNX_EXPORT_MODULES, "facelab export onnx")


def _cmd_predict(args) -> int:
    """The Keras models, or their ONNX files on ONNX Runtime, which imports no TensorFlow (``serve.loading``)."""
    from facelab.serve import predict_command
    from facelab.serve.loading import load_analyzer

    params = load_params(args.params)
    analyzer = load_analyzer(params, args.keypoints_model, args.emotion_model, _classes(args), args.runtime)
    return predict_command.run(args.photos, analyzer, args.out, args.json)


def _cmd_demo(args) -> None:
    from facelab.serve.demo import serve

    serve(
        load_params(args.params),
        args.keypoints_model,
        args.emotion_model,
        _classes(args),
        runtime=args.runtime,
        host=args.host,
        port=args.port,
        max_file_mb=args.max_file_mb,
    )


def _cmd_export_onnx(args) -> None:
    from facelab.serve.onnx_export import export_champions, summary

    print(summary(export_champions(load_params(args.params), args.out, log=not args.no_log)))


def _cmd_results(args) -> None:
    from facelab.reports.results import run

    experiment = args.experiment or load_params(args.params)["tracking"]["experiment"]
    run(experiment, args.out, args.all, args.evaluated, args.phases, args.level)


def _cmd_params_apply(args) -> None:
    from facelab.profiles import apply_profile

    apply_profile(args.profile, args.params)
    print(f"{args.params}: applied {args.profile}")


def _cmd_params_sets(args) -> None:
    from facelab.profiles import set_arguments

    print(" ".join(shlex.quote(a) for a in set_arguments(args.profile)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["FACELAB_DEBUG"] = "1"
    return guarded(lambda: _run(args))


def _run(args):
    _check_extras(args)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
