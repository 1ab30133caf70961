"""External memories with functional state, and their registry.

:data:`MEMORIES` maps the names that ``build_gtm`` and ``pgtm train --model`` accept to the
memory classes. Adding a memory is one file here, one test file (a subclass of the contract in
``tests/memory_contract.py``) and one line below: see ``docs/ADDING_A_MEMORY.md``.
"""

from pgtm.memories.base import Memory, MemoryOutput, NoMemory, SlotMemory
from pgtm.memories.dnc import DNCMemory
from pgtm.memories.ema import EMAMemory
from pgtm.memories.fast_weights import FastWeightsMemory
from pgtm.memories.introspective import IntrospectiveMemory
from pgtm.memories.kanerva import KanervaMemory
from pgtm.memories.lru import LRUMemory
from pgtm.memories.ntm import NTMMemory

__all__ = ["MEMORIES", "Memory", "MemoryOutput", "NoMemory", "SlotMemory"]

MEMORIES: dict[str, type[Memory]] = {
    "vrnn": NoMemory,
    "introspective": IntrospectiveMemory,
    "ntm": NTMMemory,
    "lru": LRUMemory,
    "dnc": DNCMemory,
    "fast-weights": FastWeightsMemory,
    "kanerva": KanervaMemory,
    "ema": EMAMemory,
}
