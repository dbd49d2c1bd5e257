"""The ``sam2s`` command: ``sam2s <command> --help`` for each command's options.

Commands are loaded on demand so ``sam2s --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module with add_arguments(parser) and run(args), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("sam2s.segment", "segment a video, frame folder or volume from a prompts file"),
    "evaluate": ("sam2s.evaluation.runner", "J&F evaluation with the paper's click/box/mask protocols"),
    "synthesize": ("sam2s.data.synthetic", "write a synthetic surgical video / volume dataset"),
    "convert": ("sam2s.convert", "turn a SAM 2.1 checkpoint into a SAM2S checkpoint"),
    "build-vocabulary": ("sam2s.semantics.text_encoders", "(re)build the class-embedding bank from a vocabulary"),
    "train": ("sam2s.training.trainer", "train SAM2S (one process, or several under torchrun)"),
    "benchmark": ("sam2s.benchmark", "per-frame speed and memory, side by side with the official SAM 2"),
}


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sam2s",
        description="SAM2S: interactive segmentation of surgical videos and medical volumes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<18} {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("command", nargs="?", help="one of: " + ", ".join(COMMANDS))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] not in COMMANDS:
        parser = _top_level_parser()
        args, _ = parser.parse_known_args(argv)
        if args.version:
            from sam2s import __version__

            print(__version__)
            return 0
        if args.command is not None and args.command not in COMMANDS:
            parser.error(f"unknown command {args.command!r}; choose one of {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    module_name, text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"sam2s {name}", description=text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        # Bad input and refused operations end with their message, not a traceback.
        print(f"sam2s {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
