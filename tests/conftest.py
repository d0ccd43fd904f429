"""Before any test module imports ``llm``: without a GPU, Triton kernels run interpreted.

``llm.kernels`` decorates its Triton kernels at import, and the decorator reads
``TRITON_INTERPRET`` then; on a machine without CUDA no compiled kernel could run anyway.
The sm_90 compile check runs in a subprocess with the variable removed.
"""

from tests.unit.kernels.interpreter import interpret_triton_without_cuda

interpret_triton_without_cuda()
