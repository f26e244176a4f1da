"""Regenerate ``eventbus_pb2.py`` and ``eventbus_pb2_grpc.py`` from ``eventbus.proto``.

Run ``python -m plugins.salesforce.pubsub.regenerate`` after editing the ``.proto`` (it needs
``grpcio-tools``, in the ``test`` extra). The generated modules are committed rather than built
at install or test time: a daemon installed from the wheel then needs only ``grpcio`` and
``protobuf``, not the compiler, and parallel test workers never race to write them.
``tests/test_salesforce_cdc.py`` regenerates into a temporary folder and fails when the
committed files differ, so the two cannot drift apart.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "eventbus.proto"
OUTPUTS = ("eventbus_pb2.py", "eventbus_pb2_grpc.py")


def generate(target: Path) -> dict[str, str]:
    """Compile the proto into ``target``; return each output's text, the import fixed to be
    package-relative (protoc writes ``import eventbus_pb2``, which only works on sys.path)."""
    from grpc_tools import protoc

    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"--python_out={target}",
            f"--grpc_python_out={target}",
            str(HERE / PROTO),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    texts = {}
    for name in OUTPUTS:
        text = (target / name).read_text()
        texts[name] = text.replace(
            "import eventbus_pb2 as eventbus__pb2",
            "from plugins.salesforce.pubsub import eventbus_pb2 as eventbus__pb2",
        )
    return texts


def main() -> int:
    """Write the generated modules beside the proto."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in generate(Path(tmp)).items():
            (HERE / name).write_text(text)
            print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
