"""`retention preview` (issue 13; being written)."""


def register(sub) -> None:
    sub.add_parser("preview", help="(not yet available)").set_defaults(handler=lambda args: 1)
