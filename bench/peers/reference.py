"""The answer every peer must give: the SavedModel called directly, outside any server.
Run: python bench/peers/reference.py SAVEDMODEL_DIR REQUEST_JSON (prints the predictions)."""

import json
import sys
from pathlib import Path

from savedmodel import SavedModel

if __name__ == "__main__":
    instances = json.loads(Path(sys.argv[2]).read_bytes())["instances"]
    print(json.dumps(SavedModel(sys.argv[1]).predict(instances)))
