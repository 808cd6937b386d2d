import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[1]
ROOT = SDK.parent
sys.path.insert(0, str(SDK))
