import sys

from . import TOOLS, ensure

if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m devtools build")
    for tool in TOOLS:
        print(ensure(tool))
