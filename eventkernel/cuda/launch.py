"""Load a cubin and launch its kernels on torch's current stream (CUDA driver API).

Every driver call is checked; a failure raises ``CudaDriverError`` naming the call and
the driver's error. Kernel arguments are passed as a list:

- ``torch.Tensor`` -> its data pointer;
- ``int`` -> a 64-bit value (device pointers, ``tensor.data_ptr()``);
- ``float`` -> a 32-bit float;
- ``None`` -> a null pointer;
- any ``ctypes`` instance (``ctypes.c_int32(n)`` for an ``int`` parameter, a
  ``ctypes.Structure`` for a struct passed by value) -> its bytes as they are.

Needs ``cuda-bindings>=13.0`` and torch with CUDA.
"""

from __future__ import annotations

import ctypes
import dataclasses

_COOPERATIVE_HINT = (
    "a cooperative launch needs every CTA resident at once: use a grid of at most "
    "SM count x max_active_blocks_per_sm(func, block, smem)"
)


class CudaDriverError(RuntimeError):
    """A CUDA driver call failed."""


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        raise CudaDriverError(
            "the CUDA backend needs the cuda-bindings package: pip install 'cuda-bindings>=13.0'"
        ) from exc
    return driver


def _check(result, what: str, hint: str = ""):
    """Unpack a cuda-bindings (err, *values) tuple, raising on any error."""
    driver = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        _, text = driver.cuGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        message = f"{what} failed: {name} ({text})"
        if hint:
            message += f"; {hint}"
        raise CudaDriverError(message)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInfo:
    ordinal: int
    name: str
    sm_count: int
    compute_capability: tuple[int, int]
    max_shared_per_block_optin: int  # bytes of dynamic smem a CTA may opt in to
    l2_bytes: int


def _torch_device(device: int | None) -> int:
    import torch

    if not torch.cuda.is_available():
        raise CudaDriverError(
            "no CUDA GPU is visible to torch (torch.cuda.is_available() is False)"
        )
    return torch.cuda.current_device() if device is None else int(device)


def device_info(device: int | None = None) -> DeviceInfo:
    """Properties of ``device`` (default: torch's current device) read from the driver."""
    driver = _driver()
    ordinal = _torch_device(device)
    _check(driver.cuInit(0), "cuInit")
    dev = _check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
    attr = driver.CUdevice_attribute

    def get(a, label):
        return _check(driver.cuDeviceGetAttribute(a, dev), f"cuDeviceGetAttribute({label})")

    raw_name = _check(driver.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = raw_name.split(b"\0", 1)[0].decode() if isinstance(raw_name, bytes) else str(raw_name)
    return DeviceInfo(
        ordinal=ordinal,
        name=name,
        sm_count=get(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count"),
        compute_capability=(
            get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "CC major"),
            get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "CC minor"),
        ),
        max_shared_per_block_optin=get(
            attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "smem optin"
        ),
        l2_bytes=get(attr.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2 size"),
    )


def require_hopper(device: int | None = None) -> DeviceInfo:
    """DeviceInfo of a Hopper GPU (compute capability 9.0), else a clear error."""
    info = device_info(device)
    if info.compute_capability != (9, 0):
        major, minor = info.compute_capability
        raise CudaDriverError(
            f"eventkernel's CUDA megakernel is built for Hopper (sm_90a, compute capability "
            f"9.0) but GPU {info.ordinal} ({info.name}) has compute capability {major}.{minor}; "
            "run on an H100/H200 or use the CPU executor"
        )
    return info


def _ensure_context(ordinal: int):
    """Make the device's primary context (the one torch uses) current; return it."""
    driver = _driver()
    _check(driver.cuInit(0), "cuInit")
    dev = _check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
    ctx = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    _check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return dev, ctx


def _pack_args(args) -> tuple[ctypes.Array, list]:
    """A void*[] of pointers to each argument's bytes, and the objects that own them."""
    holders = []
    for index, arg in enumerate(args):
        if isinstance(arg, (ctypes._SimpleCData, ctypes.Structure, ctypes.Array)):
            holders.append(arg)
        elif hasattr(arg, "data_ptr"):
            holders.append(ctypes.c_uint64(arg.data_ptr()))
        elif isinstance(arg, bool):
            raise TypeError(
                f"kernel argument {index} is a bool: pass ctypes.c_bool or ctypes.c_int32"
            )
        elif isinstance(arg, int):
            holders.append(ctypes.c_uint64(arg))
        elif isinstance(arg, float):
            holders.append(ctypes.c_float(arg))
        elif arg is None:
            holders.append(ctypes.c_uint64(0))
        else:
            raise TypeError(
                f"kernel argument {index} has unsupported type {type(arg).__name__}: pass a "
                "tensor, an int (64-bit/pointer), a float (f32), None or a ctypes value"
            )
    array = (ctypes.c_void_p * max(1, len(holders)))(
        *[ctypes.addressof(h) for h in holders]
    )
    return array, holders


def _dims(value) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
        raise ValueError(f"launch dimensions must be 1 to 3 positive ints, got {value!r}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


class LoadedModule:
    """A cubin loaded into torch's CUDA context (``cuModuleLoadData``)."""

    def __init__(self, cubin, device: int | None = None):
        driver = _driver()
        self.device = _torch_device(device)
        self._dev, self._ctx = _ensure_context(self.device)
        data = getattr(cubin, "cubin", cubin)  # accepts a CompiledKernel too
        self._image = bytes(data)
        self._module = _check(driver.cuModuleLoadData(self._image), "cuModuleLoadData")
        self._functions: dict[str, object] = {}

    def get_function(self, name: str, *, max_dynamic_smem: int = 0):
        """The kernel ``name`` (extern "C"), allowed ``max_dynamic_smem`` bytes of dynamic
        shared memory when that is given."""
        driver = _driver()
        if name not in self._functions:
            self._functions[name] = _check(
                driver.cuModuleGetFunction(self._module, name.encode()),
                f"cuModuleGetFunction('{name}')",
                "is the kernel declared extern \"C\" and spelled the same?",
            )
        func = self._functions[name]
        if max_dynamic_smem > 0:
            self.set_max_dynamic_smem(func, max_dynamic_smem)
        return func

    def copy_to_global(self, name: str, src_device_ptr: int, num_bytes: int) -> None:
        """Copy ``num_bytes`` from device memory into the module's ``__device__`` or
        ``__constant__`` variable ``name`` (synchronously), which must be that large."""
        driver = _driver()
        dptr, size = _check(driver.cuModuleGetGlobal(self._module, name.encode()),
                            f"cuModuleGetGlobal('{name}')",
                            "is the variable declared at namespace scope in the kernel source?")
        if int(size) != num_bytes:
            raise ValueError(f"the kernel's {name} has {int(size)} bytes, the host wrote "
                             f"{num_bytes}: kernel and host disagree on its layout")
        _check(driver.cuMemcpyDtoD(dptr, int(src_device_ptr), num_bytes),
               f"cuMemcpyDtoD(into {name})")
        _check(driver.cuCtxSynchronize(), f"cuCtxSynchronize (after writing {name})")

    def set_max_dynamic_smem(self, func, num_bytes: int) -> None:
        driver = _driver()
        attr = driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        _check(
            driver.cuFuncSetAttribute(func, attr, int(num_bytes)),
            f"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES={num_bytes})",
            "the GPU's opt-in limit is device_info().max_shared_per_block_optin",
        )

    def function_attributes(self, func) -> dict[str, int]:
        """Registers, local (stack + spill) bytes, static smem and max threads of ``func``."""
        driver = _driver()
        attr = driver.CUfunction_attribute
        query = {
            "registers": attr.CU_FUNC_ATTRIBUTE_NUM_REGS,
            "local_bytes": attr.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
            "static_shared_bytes": attr.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
            "max_threads_per_block": attr.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        }
        return {
            key: _check(driver.cuFuncGetAttribute(a, func), f"cuFuncGetAttribute({key})")
            for key, a in query.items()
        }

    def max_active_blocks_per_sm(self, func, block, smem: int) -> int:
        driver = _driver()
        threads = _dims(block)
        return _check(
            driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                func, threads[0] * threads[1] * threads[2], int(smem)
            ),
            "cuOccupancyMaxActiveBlocksPerMultiprocessor",
        )

    def launch(self, func, grid, block, smem: int, args, stream=None, *,
               cooperative: bool = False) -> None:
        """Launch ``func`` on ``stream`` (default: torch's current stream)."""
        driver = _driver()
        grid3, block3 = _dims(grid), _dims(block)
        config = driver.CUlaunchConfig()
        config.gridDimX, config.gridDimY, config.gridDimZ = grid3
        config.blockDimX, config.blockDimY, config.blockDimZ = block3
        config.sharedMemBytes = int(smem)
        config.hStream = _stream_handle(stream)
        if cooperative:
            attribute = driver.CUlaunchAttribute()
            attribute.id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_COOPERATIVE
            attribute.value.cooperative = 1
            config.attrs = [attribute]
            config.numAttrs = 1
        else:
            config.numAttrs = 0
        array, holders = _pack_args(args)
        what = f"cuLaunchKernelEx(grid={grid3}, block={block3}, smem={smem}" + (
            ", cooperative)" if cooperative else ")"
        )
        _check(
            driver.cuLaunchKernelEx(config, func, ctypes.addressof(array), 0),
            what,
            _COOPERATIVE_HINT if cooperative else "",
        )
        del holders  # the driver copied the argument bytes

    def launch_cooperative(self, func, grid, block, smem: int, args, stream=None) -> None:
        """Launch with every CTA co-resident (a persistent megakernel)."""
        self.launch(func, grid, block, smem, args, stream, cooperative=True)

    def close(self) -> None:
        if getattr(self, "_module", None) is not None:
            driver = _driver()
            _check(driver.cuModuleUnload(self._module), "cuModuleUnload")
            self._module = None
            self._functions.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stream_handle(stream):
    driver = _driver()
    if stream is None:
        import torch

        stream = torch.cuda.current_stream()
    handle = getattr(stream, "cuda_stream", stream)
    return driver.CUstream(int(handle))
