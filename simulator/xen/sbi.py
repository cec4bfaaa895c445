"""Xen's side of SBI RFENCE (arch/riscv/sbi.c): a cpumask becomes windows of hart IDs.

``sbi_rfence_v02`` walks the cpumask in CPU order and batches hart IDs into
one ``(hart_mask, hart_mask_base)`` window of BITS_PER_LONG harts at a time,
making an ecall each time the next hart does not fit; the first window that
fails ends the loop, and the later windows are never sent.  An empty cpumask
makes no ecall at all and returns -EINVAL (the result's initial value).
"""

from __future__ import annotations

from simulator.riscv.sbi import (
    ALL_HARTS,
    SBI_ERR_DENIED,
    SBI_ERR_FAILURE,
    SBI_ERR_INVALID_ADDRESS,
    SBI_ERR_INVALID_PARAM,
    SBI_ERR_NOT_SUPPORTED,
    SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA,
    SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA_VMID,
    SBI_SUCCESS,
)
from simulator.xen.fidelity import upstream
from simulator.xen.flushtlb import FlushTlb

BITS_PER_LONG = 64
EINVAL, EACCES, EFAULT, EOPNOTSUPP, ENOSYS = -22, -13, -14, -95, -38


class SbiCalls(FlushTlb):
    @upstream("include/asm/smp.h", differs="the model numbers harts like CPUs")
    def cpuid_to_hartid(self, cpu: int) -> int:
        return self.harts[cpu].id

    @upstream("sbi.c")
    def sbi_err_map_xen_errno(self, err: int) -> int:
        return {
            SBI_SUCCESS: 0,
            SBI_ERR_DENIED: EACCES,
            SBI_ERR_INVALID_PARAM: EINVAL,
            SBI_ERR_INVALID_ADDRESS: EFAULT,
            SBI_ERR_NOT_SUPPORTED: EOPNOTSUPP,
            SBI_ERR_FAILURE: ENOSYS,
        }.get(err, ENOSYS)

    @upstream("sbi.c")
    async def sbi_rfence_v02_real(self, fid: int, hmask: int, hbase: int, start: int, size: int, arg4: int) -> int:
        ret = await self.sbi.ecall_rfence(self.this_hart(), fid, hmask, hbase, start, size, arg4)
        if not ret:
            return 0
        self.emit("printk", text=f"sbi_rfence_v02_real: hbase={hbase} hmask={hmask:#x} failed (error {ret})", rc=ret)
        return self.sbi_err_map_xen_errno(ret)

    @upstream("sbi.c")
    async def sbi_rfence_v02(self, fid: int, cpu_mask: list[int] | None, start: int, size: int, arg4: int) -> int:
        if cpu_mask is None:
            return await self.sbi_rfence_v02_real(fid, 0, ALL_HARTS, start, size, arg4)
        hmask = hbase = htop = 0
        result = EINVAL
        for cpuid in sorted(cpu_mask):  # for_each_cpu
            hartid = self.cpuid_to_hartid(cpuid)
            if hmask:
                if hartid + BITS_PER_LONG <= htop or hbase + BITS_PER_LONG <= hartid:
                    result = await self.sbi_rfence_v02_real(fid, hmask, hbase, start, size, arg4)
                    hmask = 0
                    if result:
                        break
                elif hartid < hbase:
                    hmask <<= hbase - hartid  # shift the mask to fit a lower hartid
                    hbase = hartid
            if not hmask:
                hbase = htop = hartid
            elif hartid > htop:
                htop = hartid
            hmask |= 1 << (hartid - hbase)
        if hmask:
            result = await self.sbi_rfence_v02_real(fid, hmask, hbase, start, size, arg4)
        return result

    @upstream("sbi.c", policies=("tlbflush_clock",))
    async def sbi_remote_hfence_gvma(self, cpu_mask: list[int] | None, start: int, size: int) -> int:
        # policy tlbflush_clock: a full flush ticks the clock and stamps its targets once it returned
        t = self.pre_flush() if self.profile.tlbflush_clock and start == 0 and size == 0 else 0
        rc = await self.sbi_rfence_v02(SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA, cpu_mask, start, size, 0)
        if t and not rc:
            for cpu in range(len(self.harts)) if cpu_mask is None else cpu_mask:
                self.post_flush(cpu, t)
        return rc

    @upstream("sbi.c")
    async def sbi_remote_hfence_gvma_vmid(self, cpu_mask: list[int] | None, start: int, size: int, vmid: int) -> int:
        return await self.sbi_rfence_v02(SBI_EXT_RFENCE_REMOTE_HFENCE_GVMA_VMID, cpu_mask, start, size, vmid)
