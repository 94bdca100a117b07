"""The test suite. Imported before ``conftest.py`` and so before torch or numpy: the place to set their threads.

Under pytest-xdist each worker, and every process it starts, gets its share of the cores as torch and BLAS threads.
Two workers on 2 cores with two threads each spend their extra time spinning, not computing (measured on the suite:
27.7 CPU minutes with two threads a worker against 21.5 run serially). Set in the environment so that the train.py and
analyze.py subprocesses the tests start inherit it; a variable the user set is kept.
"""

import os

if _workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _share)
