/*
 * The second half of p2msim's harness, after the tree's include/asm/p2m.h (which
 * declares struct p2m_domain): struct domain and struct vcpu as p2m.c uses them,
 * and the pool, heap and reference calls, each a call into Python.
 */
#ifndef P2MSIM_HARNESS_DOMAIN_H
#define P2MSIM_HARNESS_DOMAIN_H

#define MEMF_no_owner (1U << 5) /* xen/mm.h */

struct paging_domain {
    spinlock_t lock;
    struct page_list_head freelist;
    unsigned long total_pages;
};

struct arch_domain {
    struct p2m_domain p2m;
    struct paging_domain paging;
};

struct domain {
    domid_t domain_id;
    bool is_dying;
    cpumask_t *dirty_cpumask;
    struct arch_domain arch;
};

struct vcpu_vmid {
    uint64_t generation;
    uint16_t vmid;
};

struct arch_vcpu {
    unsigned long vsatp;
    struct vcpu_vmid vmid;
};

struct vcpu {
    int vcpu_id;
    struct domain *domain;
    struct arch_vcpu arch;
};

/* the vCPU each hart runs (set_current in the model's context_switch glue); NULL: the idle vCPU */
extern struct vcpu *harness_current[HARNESS_NR_CPUS];
#define current (harness_current[smp_processor_id()])
#define is_idle_vcpu(v) ((v) == NULL)
#define is_system_domain(d) ((d)->domain_id >= 0x7FF0U)

static inline long harness_pool(int op, int domid, long arg, long arg2)
{
    long r = harness_ops.pool(op, domid, arg, arg2);

    harness_check();
    return r;
}

static inline struct page_info *harness_page(long mfn)
{
    return mfn < 0 ? NULL : frame_table + mfn;
}

/* xen/mm.h, common/page_alloc.c, arch/riscv/mm.c (p2msim's Python model) */
static inline struct page_info *alloc_domheap_pages(struct domain *d, unsigned int order, unsigned int memflags)
{
    return harness_page(harness_pool(H_ALLOC_DOMHEAP, d->domain_id, order, memflags));
}
static inline struct page_info *alloc_domheap_page(struct domain *d, unsigned int memflags)
{
    return alloc_domheap_pages(d, 0, memflags);
}
static inline void free_domheap_page(struct page_info *pg)
{
    harness_pool(H_FREE_DOMHEAP, -1, mfn_x(page_to_mfn(pg)), 0);
}
static inline void put_page(struct page_info *pg)
{
    harness_pool(H_PUT_PAGE, -1, mfn_x(page_to_mfn(pg)), 0);
}
static inline bool get_page(struct page_info *pg, const struct domain *d)
{
    return harness_pool(H_GET_PAGE, d->domain_id, mfn_x(page_to_mfn(pg)), 0);
}
static inline const struct domain *page_get_owner_and_reference(struct page_info *pg)
{
    (void)pg;
    ASSERT_UNREACHABLE(); /* only p2m_get_page_from_gfn's foreign case: p2msim keeps the Python one */
    return NULL;
}
static inline void domain_crash(struct domain *d)
{
    harness_pool(H_DOMAIN_CRASH, d->domain_id, 0, 0);
}

struct xen_arch_domainconfig { uint8_t gaddr_bits; };
struct xen_domctl_createdomain { struct xen_arch_domainconfig arch; };

#endif /* P2MSIM_HARNESS_DOMAIN_H */
