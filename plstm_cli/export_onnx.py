"""``plstm export-onnx``: export a checkpoint to ONNX (``models.onnx.export``), optionally check
ONNX Runtime against torch. Imported by ``plstm_cli.main`` only when the subcommand is used."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Exports the network of a checkpoint directory (config.json + model.safetensors, as written by
`plstm train`) to ONNX and writes a JSON sidecar next to it (<out>.json) with the sha256 of the
weights it came from, so the model server re-exports when the weights change.

  image models (plstm_vis_*, vit_*): input `images` [B,C,H,W] float32 at the checkpoint's
      native resolution (batch size free), output `logits`. Other resolutions run on the
      server's torch paths (parallel / recurrent / chunkwise).
  plstm_graph: inputs are the node / edge features plus index tensors that the server
      computes per batch (line graphs, padding slots); every size is free. Components of up
      to --max-graph-nodes nodes are supported.

The export runs on the CPU in float32 (bf16 checkpoints are cast) and is checked against
torch once before it is written. With --check, ONNX Runtime and torch are also compared on
random inputs (images: batches of 1 and 4; graphs: random molecules and DAGs of varying
sizes batched together) and the max abs difference is printed; the exit status is 1 when it
exceeds 1e-3.

example:  plstm export-onnx model_repository/arrow-pointing/1 --check
"""


def build_parser(prog: str = "plstm export-onnx") -> argparse.ArgumentParser:
    from models.onnx.export import DEFAULT_MAX_GRAPH_NODES, DEFAULT_OPSET, MAX_OPSET
    from models.onnx.symbolics import MIN_OPSET

    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint directory to export")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the ONNX file (default: <checkpoint>/model.onnx); the sidecar "
        "goes to FILE.json",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--max-graph-nodes",
        type=int,
        default=DEFAULT_MAX_GRAPH_NODES,
        metavar="N",
        help="graph models: largest connected graph (in nodes) the export must handle "
        f"(default {DEFAULT_MAX_GRAPH_NODES}; rounded up to a power of two)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare ONNX Runtime with torch on random inputs and print the max abs "
        "difference (exit status 1 above 1e-3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --check inputs")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "plstm export-onnx") -> int:
    """Run the subcommand; returns the exit status (2 for a checkpoint that cannot be
    exported, 1 for a failed --check)."""
    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else list(argv))
    from models.onnx.export import EXPORT_TOLERANCE, export_checkpoint
    from models.onnx.runtime import check_onnx_agreement

    try:
        export = export_checkpoint(
            args.checkpoint, args.out, opset=args.opset, max_graph_nodes=args.max_graph_nodes
        )
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    info = export.info
    detail = (
        f"images {info['channels']}x{info['image_size'][0]}x{info['image_size'][1]}"
        if export.kind == "image"
        else f"graph components up to {info['max_graph_nodes']} nodes"
    )
    print(
        f"wrote {export.path} ({info['architecture']}, opset {info['opset']}, {detail}; "
        f"export check max abs diff {info['check_max_abs_diff']:.3g})"
    )
    if not args.check:
        return 0
    diff = check_onnx_agreement(args.checkpoint, export.path, seed=args.seed)
    ok = diff <= EXPORT_TOLERANCE
    print(
        f"check: max abs difference ONNX Runtime vs torch on random inputs: {diff:.3g} "
        f"({'ok' if ok else 'FAIL'}, tolerance {EXPORT_TOLERANCE:g})"
    )
    return 0 if ok else 1
