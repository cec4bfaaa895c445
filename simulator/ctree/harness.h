/*
 * p2msim's userspace harness for a Xen tree's xen/arch/riscv/p2m.c (our own code, not Xen's).
 *
 * The way Xen's tools/tests/vpci and tools/tests/pdx build hypervisor code: the
 * source is copied with its #include lines blanked (so __LINE__ is the tree's),
 * compiled with -include harness.h, and this file defines just what p2m.c uses.
 * The tree's own include/asm/p2m.h (struct p2m_domain, p2m_type_t, the P2M_*
 * macros) is pasted in after this file, so a field a user adds there is seen.
 *
 * Every action of the C that another hart can observe is a call into Python
 * (struct harness_ops), where it becomes a conductor step: a PTE store, a lock
 * operation, an SBI fence, a page allocation, free or put.  Loads of table
 * memory are plain C loads: map_domain_page() returns a pointer into the
 * simulator's own table storage, so the harts' walkers read what the C wrote.
 *
 * Invariant: Python may switch away from the C only inside a callback
 * (greenlet); the current invocation's context (hctx) is switched with it.
 */
#ifndef P2MSIM_HARNESS_H
#define P2MSIM_HARNESS_H

#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_RISCV_64 1
#define CONFIG_QEMU_PLATFORM 1

/* -- compiler and bit helpers (xen/include/xen/compiler.h, const.h, bitops.h) -- */
#define __init
#define __initdata
#define __ro_after_init
#define __read_mostly
#define __must_check __attribute__((warn_unused_result))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define _AC(X, Y) (X##Y)
#define _AT(T, X) ((T)(X))
#define _UL(x) (x##UL)
#define _ULL(x) (x##ULL)
#define _U(x) (x##U)
#define BIT(pos, sfx) (1##sfx << (pos))
#define KB(x) ((x) << 10)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MASK_EXTR(v, m) (((v) & (m)) / ((m) & -(m)))
#define MASK_INSR(v, m) (((v) * ((m) & -(m))) & (m))
#define ilog2(x) (63 - __builtin_clzl((unsigned long)(x)))
#define ACCESS_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define min(x, y) ({ __typeof__(x) _x = (x); __typeof__(y) _y = (y); _x < _y ? _x : _y; })
#define max(x, y) ({ __typeof__(x) _x = (x); __typeof__(y) _y = (y); _x > _y ? _x : _y; })
#define BUILD_BUG_ON(cond) ((void)sizeof(char[1 - 2 * !!(cond)]))

/* -- errno (xen/include/public/errno.h values) -- */
#define ENOENT 2
#define ENOMEM 12
#define EACCES 13
#define EBUSY 16
#define EINVAL 22
#define ENOSPC 28
#define EOVERFLOW 75
#define ERESTART 85
#define EOPNOTSUPP 95

/* -- frames and addresses (asm/page-bits.h, xen/mm-frame.h, typesafe mfn_t/gfn_t) -- */
#define PAGE_SHIFT 12
#define PAGE_SIZE (_AC(1, UL) << PAGE_SHIFT)
#define PAGETABLE_ORDER 9
#define PAGETABLE_ENTRIES (_AC(1, U) << PAGETABLE_ORDER)
#define PADDR_BITS 56
#define PADDR_MASK ((_AC(1, ULL) << PADDR_BITS) - 1)
#define PTE_PPN_SHIFT 10
#define GSTAGE_ROOT_PAGE_TABLE_SIZE KB(16)
#define PFN_DOWN(x) ((x) >> PAGE_SHIFT)
#define pfn_to_paddr(pfn) ((paddr_t)(pfn) << PAGE_SHIFT)

typedef uint64_t paddr_t;
typedef unsigned long vaddr_t;
typedef uint16_t domid_t;
typedef struct { unsigned long mfn; } mfn_t;
typedef struct { unsigned long gfn; } gfn_t;

static inline mfn_t _mfn(unsigned long m) { return (mfn_t){ m }; }
static inline unsigned long mfn_x(mfn_t m) { return m.mfn; }
static inline gfn_t _gfn(unsigned long g) { return (gfn_t){ g }; }
static inline unsigned long gfn_x(gfn_t g) { return g.gfn; }
#define INVALID_MFN _mfn(~0UL)
#define INVALID_GFN _gfn(~0UL)
static inline bool mfn_eq(mfn_t a, mfn_t b) { return mfn_x(a) == mfn_x(b); }
static inline mfn_t mfn_add(mfn_t m, unsigned long i) { return _mfn(mfn_x(m) + i); }
static inline gfn_t gfn_add(gfn_t g, unsigned long i) { return _gfn(gfn_x(g) + i); }
static inline gfn_t gfn_max(gfn_t a, gfn_t b) { return gfn_x(a) > gfn_x(b) ? a : b; }
static inline gfn_t gfn_min(gfn_t a, gfn_t b) { return gfn_x(a) < gfn_x(b) ? a : b; }
static inline paddr_t gfn_to_gaddr(gfn_t g) { return (paddr_t)gfn_x(g) << PAGE_SHIFT; }
static inline paddr_t mfn_to_maddr(mfn_t m) { return (paddr_t)mfn_x(m) << PAGE_SHIFT; }
static inline mfn_t maddr_to_mfn(paddr_t ma) { return _mfn(ma >> PAGE_SHIFT); }

/* -- G-stage PTEs (asm/page.h; the privileged spec's encoding) -- */
#define PTE_VALID BIT(0, UL)
#define PTE_READABLE BIT(1, UL)
#define PTE_WRITABLE BIT(2, UL)
#define PTE_EXECUTABLE BIT(3, UL)
#define PTE_USER BIT(4, UL)
#define PTE_GLOBAL BIT(5, UL)
#define PTE_ACCESSED BIT(6, UL)
#define PTE_DIRTY BIT(7, UL)
#define PTE_RSW (BIT(8, UL) | BIT(9, UL))
#define PTE_PBMT_NOCACHE BIT(61, UL)
#define PTE_PBMT_IO BIT(62, UL)
#define PTE_ACCESS_MASK (PTE_READABLE | PTE_WRITABLE | PTE_EXECUTABLE)
#define PTE_PPN_MASK _UL(0x3FFFFFFFFFFC00)
#define PAGE_HYPERVISOR_RW (PTE_VALID | PTE_READABLE | PTE_WRITABLE)
#define XEN_PT_LEVEL_ORDER(lvl) ((lvl) * PAGETABLE_ORDER)

typedef struct { uint64_t pte; } pte_t;

static inline void pte_set_mfn(pte_t *p, mfn_t mfn)
{
    p->pte &= ~PTE_PPN_MASK;
    p->pte |= MASK_INSR(mfn_x(mfn), PTE_PPN_MASK);
}
static inline mfn_t pte_get_mfn(pte_t p) { return _mfn(MASK_EXTR(p.pte, PTE_PPN_MASK)); }
static inline bool pte_is_valid(pte_t p) { return p.pte & PTE_VALID; }
static inline bool pte_is_table(pte_t p) { return (p.pte & (PTE_VALID | PTE_ACCESS_MASK)) == PTE_VALID; }
static inline bool pte_is_mapping(pte_t p) { return (p.pte & PTE_VALID) && (p.pte & PTE_ACCESS_MASK); }
static inline bool pte_is_superpage(pte_t p, unsigned int level) { return level > 0 && pte_is_mapping(p); }
static inline paddr_t pte_to_paddr(pte_t p) { return (paddr_t)MASK_EXTR(p.pte, PTE_PPN_MASK) << PAGE_SHIFT; }
#define mfn_from_pte(pte) maddr_to_mfn(pte_to_paddr(pte))
static inline int clean_dcache_va_range(const void *p, unsigned long size) { (void)p; (void)size; return 0; }

/* -- hgatp and CSRs (asm/riscv_encoding.h) -- */
#define HGATP_MODE_OFF _UL(0)
#define HGATP_MODE_SV32X4 _UL(1)
#define HGATP_MODE_SV39X4 _UL(8)
#define HGATP_MODE_SV48X4 _UL(9)
#define HGATP_MODE_SV57X4 _UL(10)
#define HGATP_MODE_MASK _ULL(0xF000000000000000)
#define HGATP_VMID_MASK _ULL(0x03FFF00000000000)
#define HGATP_PPN_MASK _ULL(0x00000FFFFFFFFFFF)
#define CSR_VSATP 0x280
#define CSR_HGATP 0x680

/* -- struct page_info (asm/mm.h: the fields p2m.c uses, under the tree's names) -- */
#define MAX_ORDER 18
struct domain;
struct vcpu;
struct page_list_entry { struct page_info *next, *prev; };
struct page_info {
    struct page_list_entry list;
    unsigned long count_info;
    union {
        struct { unsigned long type_info; } inuse;
        struct { unsigned long used_entries; } md;
    } u;
    union {
        struct { struct domain *domain; } inuse;
        struct { unsigned int order; } free;
        struct { struct page_info *pg; } md;
    } v;
    uint32_t tlbflush_timestamp;
};
/* xen/mm.h page lists (doubly linked through page_info.list; the model's glue reads p2m->pages) */
struct page_list_head {
    struct page_info *next, *tail;
    int pool_of; /* a domain's p2m pool freelist (domid + 1): its changes are the machine's, Python is told */
};
void harness_pool_list(const struct page_list_head *head, int op, struct page_info *pg);
#define PAGE_LIST_HEAD_INIT(name) { NULL, NULL }
#define INIT_PAGE_LIST_HEAD(head) ((head)->next = (head)->tail = NULL) /* pool_of stays */
static inline bool page_list_empty(const struct page_list_head *head) { return !head->next; }
static inline struct page_info *page_list_first(const struct page_list_head *head) { return head->next; }
static inline struct page_info *page_list_last(const struct page_list_head *head) { return head->tail; }
static inline struct page_info *page_list_next(const struct page_info *page, const struct page_list_head *head)
{
    (void)head;
    return page->list.next;
}
static inline struct page_info *page_list_prev(const struct page_info *page, const struct page_list_head *head)
{
    (void)head;
    return page->list.prev;
}
static inline void page_list_add(struct page_info *page, struct page_list_head *head)
{
    page->list.prev = NULL;
    page->list.next = head->next;
    if ( head->next )
        head->next->list.prev = page;
    else
        head->tail = page;
    head->next = page;
    if ( head->pool_of )
        harness_pool_list(head, 0, page);
}
static inline void page_list_add_tail(struct page_info *page, struct page_list_head *head)
{
    page->list.next = NULL;
    page->list.prev = head->tail;
    if ( head->tail )
        head->tail->list.next = page;
    else
        head->next = page;
    head->tail = page;
    if ( head->pool_of )
        harness_pool_list(head, 0, page);
}
static inline void page_list_del(struct page_info *page, struct page_list_head *head)
{
    if ( page->list.prev )
        page->list.prev->list.next = page->list.next;
    else
        head->next = page->list.next;
    if ( page->list.next )
        page->list.next->list.prev = page->list.prev;
    else
        head->tail = page->list.prev;
    page->list.next = page->list.prev = NULL;
    if ( head->pool_of )
        harness_pool_list(head, 1, page);
}
static inline struct page_info *page_list_remove_head(struct page_list_head *head)
{
    struct page_info *page = head->next;

    if ( page )
        page_list_del(page, head);
    return page;
}
#define page_list_for_each(pos, head) for ( (pos) = (head)->next; (pos); (pos) = page_list_next(pos, head) )
#define page_list_for_each_safe(pos, tmp, head) \
    for ( (pos) = (head)->next; (pos) ? ((tmp) = page_list_next(pos, head), 1) : 0; (pos) = (tmp) )

/* -- locks: p2msim's, blocking through the conductor (xen/rwlock.h, xen/spinlock.h) -- */
typedef struct { int domid; } rwlock_t;
typedef struct { int domid; } spinlock_t;
#define rwlock_init(l) ((void)(l))
#define spin_lock_init(l) ((void)(l))

typedef struct { int domid; } cpumask_t; /* a domain's dirty_cpumask (domid), or cpu_online_map (-1) */

/* -- what the C asks of the simulation (set by Python before the first call) -- */
enum harness_lock_op { H_WRITE_LOCK, H_WRITE_UNLOCK, H_READ_LOCK, H_READ_UNLOCK, H_IS_WRITE_LOCKED, H_IS_LOCKED,
                       H_SPIN_LOCK, H_SPIN_UNLOCK, H_SPIN_IS_LOCKED };
enum harness_pool_op { H_POOL_ADDED, H_POOL_REMOVED, H_FREE_DOMHEAP, H_ALLOC_DOMHEAP, H_PUT_PAGE, H_GET_PAGE,
                       H_DOMAIN_CRASH, H_ISA_EXT };
struct harness_ops {
    void (*map)(unsigned long mfn, int *snapshot);  /* the frame is mapped (snapshot: a data page) */
    void (*write_pte)(unsigned long mfn, unsigned int idx, uint64_t val, int private_table);
    void (*stored)(unsigned long mfn, int data);    /* a private table was filled (0) / a data page stored (1) */
    void (*clear)(unsigned long mfn);
    long (*lock)(int op, int domid);
    long (*pool)(int op, int domid, long arg, long arg2);
    int (*sbi_remote_hfence_gvma)(int maskid, unsigned long start, unsigned long size);
    void (*assert_failed)(int kind, const char *expr, const char *file, int line); /* 0 ASSERT, 1 BUG, 2 unreach */
    void (*printk)(const char *text);
    void (*leaf)(int domid, unsigned long table, unsigned int idx, unsigned int level, uint64_t pte, int type);
    void (*free_page)(int domid, unsigned long mfn); /* p2m_free_page was called for it */
    void (*hgatp)(unsigned long val);                /* csr_write(CSR_HGATP): the hart's, a step */
    void (*local_hfence)(void);                      /* local_hfence_gvma_all() on this hart */
    void (*vmid_assigned)(int domid, int vcpu_id, unsigned int vmid, uint64_t generation);
    void (*step)(void);                              /* an instruction boundary the model steps at */
};

#define HARNESS_STACK 64 /* C frames kept for explanations (deeper ones are counted, not named) */
struct harness_ctx {
    sigjmp_buf jmp;
    int aborted;
    int in_c;          /* the C is running (not Python in a callback): a fault now is the C's */
    int fault_sig;     /* the C faulted: the signal, and where */
    void *fault_addr;
    int depth;
    long md_table; /* the table p2m_set_type was last called for (its metadata page's "why") */
    int cpu;       /* the hart this call runs on (smp_processor_id), -1 for the workload's driver */
    int boot;      /* vmid_init at bring-up: hgatp writes stay in the harness (vmidlen_detect's probe) */
    void *stack[HARNESS_STACK];
};

extern struct harness_ops harness_ops;
extern struct harness_ctx *hctx;
extern struct page_info *frame_table;
extern unsigned long harness_nr_frames;
extern unsigned char *harness_direct_map; /* the simulator's table storage: frame N at N * PAGE_SIZE */
extern cpumask_t cpu_online_map;

/* Python failed the call (a panic, a stop, a cancellation): unwind the C to its entry point. */
static inline void harness_check(void)
{
    if ( hctx && hctx->aborted )
        siglongjmp(hctx->jmp, 1);
}

#define mfn_valid(m) (mfn_x(m) < harness_nr_frames)
#define mfn_to_page(m) (frame_table + mfn_x(m))
#define page_to_mfn(pg) _mfn((unsigned long)((pg) - frame_table))

/* -- xen/bug.h: ASSERT is evaluated in every build; Python decides (--debug-build panics) -- */
#define ASSERT(p) \
    do { if ( unlikely(!(p)) ) { harness_ops.assert_failed(0, #p, __FILE__, __LINE__); harness_check(); } } while ( 0 )
#define BUG_ON(p) \
    do { if ( unlikely(p) ) { harness_ops.assert_failed(1, #p, __FILE__, __LINE__); harness_check(); } } while ( 0 )
#define BUG() BUG_ON(1)
#define ASSERT_UNREACHABLE() \
    do { harness_ops.assert_failed(2, "unreachable", __FILE__, __LINE__); harness_check(); } while ( 0 )

void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define XENLOG_ERR ""
#define XENLOG_WARNING ""
#define dprintk(lvl, fmt, ...) printk(lvl fmt, ##__VA_ARGS__)
#define panic(fmt, ...) do { printk(fmt, ##__VA_ARGS__); BUG(); } while ( 0 )

/* -- the direct map (xen/domain_page.h): the simulator's table storage -- */
void *map_domain_page(mfn_t mfn);
void unmap_domain_page(const void *p);
mfn_t domain_page_map_to_mfn(const void *p);
#define __map_domain_page(pg) map_domain_page(page_to_mfn(pg))
#define clear_page(p) harness_clear_page(p)
void harness_clear_page(void *p);

/* asm/page.h: one atomic store another hart's walker can see */
void write_pte(pte_t *p, pte_t pte);

/* -- locks -- */
static inline long harness_lock(int op, int domid) { long r = harness_ops.lock(op, domid); harness_check(); return r; }
#define write_lock(l) ((void)harness_lock(H_WRITE_LOCK, (l)->domid))
#define write_unlock(l) ((void)harness_lock(H_WRITE_UNLOCK, (l)->domid))
#define read_lock(l) ((void)harness_lock(H_READ_LOCK, (l)->domid))
#define read_unlock(l) ((void)harness_lock(H_READ_UNLOCK, (l)->domid))
#define rw_is_write_locked(l) ((bool)harness_lock(H_IS_WRITE_LOCKED, (l)->domid))
#define rw_is_locked(l) ((bool)harness_lock(H_IS_LOCKED, (l)->domid))
#define spin_lock(l) ((void)harness_lock(H_SPIN_LOCK, (l)->domid))
#define spin_unlock(l) ((void)harness_lock(H_SPIN_UNLOCK, (l)->domid))
#define spin_is_locked(l) ((bool)harness_lock(H_SPIN_IS_LOCKED, (l)->domid))
#define general_preempt_check() false /* p2msim does not preempt hypercalls */

/* -- CPU features (asm/cpufeature.h) -- */
enum riscv_isa_ext_id { RISCV_ISA_EXT_svade = 1, RISCV_ISA_EXT_svpbmt = 2 };
bool riscv_isa_extension_available(const unsigned long *isa_bitmap, enum riscv_isa_ext_id id);

/* -- per-CPU data and the current hart (xen/percpu.h, xen/smp.h) -- */
#define HARNESS_NR_CPUS 1024 /* p2msim's MAX_HARTS */
unsigned int harness_cpu(void);
#define smp_processor_id() harness_cpu()
#define DEFINE_PER_CPU(type, name) __typeof__(type) per_cpu__##name[HARNESS_NR_CPUS]
#define per_cpu(name, cpu) (per_cpu__##name[(cpu)])
#define this_cpu(name) per_cpu(name, smp_processor_id())
#define BITS_PER_BYTE 8
static inline int flsl(unsigned long x) { return x ? 64 - __builtin_clzl(x) : 0; }

/* xen/atomic.h: a vCPU's VMID generation is written with write_atomic, and Python is told (vmid.assign) */
void harness_written(const volatile void *p);
#define read_atomic(p) ACCESS_ONCE(*(p))
#define write_atomic(p, x) ((void)(ACCESS_ONCE(*(p)) = (x)), harness_written(p))

/* xen/param.h: a boot option is a variable p2msim sets from --xen-opt before each simulation */
void harness_boolean_param(const char *name, bool *var);
#define boolean_param(_name, _var) \
    __attribute__((constructor)) static void harness_param_##_var(void) { harness_boolean_param(_name, &(_var)); } \
    extern int harness_param_end_##_var

/* -- CSRs and local fences (asm/csr.h, asm/flushtlb.h): hgatp is the hart's, VS-stage is not modelled -- */
unsigned long csr_read(unsigned long csr);
void csr_write(unsigned long csr, unsigned long val);
unsigned long csr_swap(unsigned long csr, unsigned long val);
void local_hfence_gvma_all(void);
void flush_tlb_guest_local(void);
int sbi_remote_hfence_gvma(const cpumask_t *cpu_mask, vaddr_t start, size_t size);

#endif /* P2MSIM_HARNESS_H */
