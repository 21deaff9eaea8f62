"""Remove the project's own entry from a pip-compile lock file (`make lock`): the dev extra names the
project to include its other extras, which pip-compile writes as an unhashable file:// requirement."""

import re
import sys
from pathlib import Path

path = Path(sys.argv[1])
text = path.read_text()
text = re.sub(
    r"# WARNING: pip install will require the following package to be hashed\.\n"
    r"# Consider using a hashable URL like .*\n"
    r"image-classifier-service @ file://\S+\n(?:    # via .*\n)+",
    "",
    text,
)
path.write_text(text)
