/*
 * p2msim's entry points into the tree's p2m.c, appended to the same translation
 * unit so that its static functions can be called.  Each entry sets the current
 * context and a sigsetjmp point: a panic, an ASSERT of a debug build, or a
 * failure in Python (a stop, a cancellation) jumps back here and returns
 * H_ABORTED; a fault of the C (SIGSEGV, SIGBUS, runaway recursion) H_FAULTED.
 */

#define H_ABORTED INT_MIN
#define H_FAULTED (INT_MIN + 1)

struct harness_ops harness_ops;
struct harness_ctx *hctx;
struct page_info *frame_table;
unsigned long harness_nr_frames;
unsigned char *harness_direct_map;
cpumask_t cpu_online_map = { -1 };

#define HARNESS_MAX_DEPTH 4096 /* C calls deep: far past any real recursion of p2m.c, well inside our stack */

/* pages mapped now (map_domain_page), to find the frame and index of a store */
#define HARNESS_MAPS 128 /* shared by every hart's call into the C */
static struct { uint64_t *base; unsigned long mfn; int refs; unsigned char *snap; } maps[HARNESS_MAPS];
/* table pages handed out by p2m_alloc_page and not yet linked into a reachable table */
static unsigned char *unpublished;

/* hidden: glibc has no-op hooks of the same names, which a default-visibility definition would lose to */
__attribute__((no_instrument_function, visibility("hidden"))) void __cyg_profile_func_enter(void *fn, void *site)
{
    (void)site;
    if ( hctx )
    {
        if ( hctx->depth < HARNESS_STACK )
            hctx->stack[hctx->depth] = fn;
        if ( ++hctx->depth > HARNESS_MAX_DEPTH && hctx->in_c )
        {
            hctx->fault_sig = -1; /* unbounded recursion: Xen's stack would overflow here */
            siglongjmp(hctx->jmp, 2);
        }
    }
}

__attribute__((no_instrument_function, visibility("hidden"))) void __cyg_profile_func_exit(void *fn, void *site)
{
    (void)fn;
    (void)site;
    if ( hctx && hctx->depth > 0 )
        hctx->depth--;
}

/* the frame of a pointer into the direct map, or -1 (a local) */
static long frame_of(const void *p)
{
    const unsigned char *c = p;

    if ( c < harness_direct_map || c >= harness_direct_map + harness_nr_frames * PAGE_SIZE )
        return -1;
    return (long)((c - harness_direct_map) >> PAGE_SHIFT);
}

static int slot_of(const void *p)
{
    long mfn = frame_of(p);

    for ( int i = 0; mfn >= 0 && i < HARNESS_MAPS; i++ )
        if ( maps[i].refs && maps[i].mfn == (unsigned long)mfn )
            return i;
    return -1;
}

void *map_domain_page(mfn_t mfn)
{
    int snapshot = 0, free_slot = -1;
    uint64_t *base;

    if ( !mfn_valid(mfn) )
    {
        printk("map_domain_page(%#lx): no such frame (a wild pointer in the C)\n", mfn_x(mfn));
        BUG();
    }
    for ( int i = 0; i < HARNESS_MAPS; i++ )
    {
        if ( maps[i].refs && maps[i].mfn == mfn_x(mfn) )
        {
            maps[i].refs++;
            return maps[i].base;
        }
        if ( !maps[i].refs && free_slot < 0 )
            free_slot = i;
    }
    BUG_ON(free_slot < 0); /* more pages mapped at once than the harness keeps */
    harness_ops.map(mfn_x(mfn), &snapshot);
    harness_check();
    base = (uint64_t *)(harness_direct_map + mfn_x(mfn) * PAGE_SIZE);
    maps[free_slot].base = base;
    maps[free_slot].mfn = mfn_x(mfn);
    maps[free_slot].refs = 1;
    if ( snapshot )
    {
        static unsigned char snaps[HARNESS_MAPS][PAGE_SIZE];

        memcpy(snaps[free_slot], base, PAGE_SIZE);
        maps[free_slot].snap = snaps[free_slot];
    }
    else
        maps[free_slot].snap = NULL;
    return base;
}

void unmap_domain_page(const void *p)
{
    int i;

    if ( !p )
        return;
    i = slot_of(p);
    BUG_ON(i < 0); /* unmap of a pointer map_domain_page did not return */
    if ( --maps[i].refs )
        return;
    if ( maps[i].snap && memcmp(maps[i].snap, maps[i].base, PAGE_SIZE) )
    {
        harness_ops.stored(maps[i].mfn, 1);
        harness_check();
    }
    if ( unpublished[maps[i].mfn] == 2 ) /* a private table written since it was mapped */
    {
        unpublished[maps[i].mfn] = 1;
        harness_ops.stored(maps[i].mfn, 0);
        harness_check();
    }
}

mfn_t domain_page_map_to_mfn(const void *p)
{
    long mfn = frame_of(p);

    BUG_ON(mfn < 0);
    return _mfn((unsigned long)mfn);
}

void harness_clear_page(void *p)
{
    long mfn = frame_of(p);

    BUG_ON(mfn < 0);
    harness_ops.clear((unsigned long)mfn);
    harness_check();
}

/* A table becomes reachable: so does every private table linked from it. */
static void publish(unsigned long mfn)
{
    const uint64_t *t;

    if ( mfn >= harness_nr_frames || !unpublished[mfn] )
        return;
    unpublished[mfn] = 0;
    t = (const uint64_t *)(harness_direct_map + mfn * PAGE_SIZE);
    for ( unsigned int i = 0; i < PAGETABLE_ENTRIES; i++ )
        if ( pte_is_table((pte_t){ t[i] }) )
            publish(mfn_x(pte_get_mfn((pte_t){ t[i] })));
}

void write_pte(pte_t *p, pte_t pte)
{
    long frame = frame_of(p);
    unsigned long mfn;
    unsigned int idx;

    if ( frame < 0 ) /* not table memory: a local (p2m_split_superpage's split_pte) */
    {
        *p = pte;
        return;
    }
    mfn = (unsigned long)frame;
    idx = (unsigned int)(((const unsigned char *)p - harness_direct_map - mfn * PAGE_SIZE) / sizeof(pte_t));
    if ( unpublished[mfn] )
    {
        /* no walker can reach this table yet: a plain store, not a step */
        unpublished[mfn] = 2;
        harness_ops.write_pte(mfn, idx, pte.pte, 1);
        harness_check();
        return;
    }
    harness_ops.write_pte(mfn, idx, pte.pte, 0);
    harness_check();
    if ( pte_is_table(pte) )
        publish(mfn_x(pte_get_mfn(pte)));
}

bool riscv_isa_extension_available(const unsigned long *isa_bitmap, enum riscv_isa_ext_id id)
{
    (void)isa_bitmap;
    return harness_pool(H_ISA_EXT, -1, id, 0);
}

int sbi_remote_hfence_gvma(const cpumask_t *cpu_mask, vaddr_t start, size_t size)
{
    int rc = harness_ops.sbi_remote_hfence_gvma(cpu_mask->domid, start, size);

    harness_check();
    return rc;
}

/* printk with Xen's %pd and %pv (a domain, a vCPU) */
void printk(const char *fmt, ...)
{
    char out[512], spec[32];
    size_t n = 0;
    va_list ap;

    va_start(ap, fmt);
    for ( const char *f = fmt; *f && n < sizeof(out) - 64; f++ )
    {
        size_t k = 0;

        if ( *f != '%' )
        {
            out[n++] = *f;
            continue;
        }
        if ( f[1] == 'p' && (f[2] == 'd' || f[2] == 'v') )
        {
            if ( f[2] == 'd' )
                n += snprintf(out + n, sizeof(out) - n, "d%d", va_arg(ap, struct domain *)->domain_id);
            else
            {
                struct vcpu *v = va_arg(ap, struct vcpu *);

                n += snprintf(out + n, sizeof(out) - n, "d%dv%d", v->domain->domain_id, v->vcpu_id);
            }
            f += 2;
            continue;
        }
        spec[k++] = *f++;
        while ( *f && strchr("#-+ 0123456789.lhz", *f) && k < sizeof(spec) - 2 )
            spec[k++] = *f++;
        spec[k++] = *f;
        spec[k] = 0;
        if ( *f == '%' )
            out[n++] = '%';
        else if ( *f == 's' )
            n += snprintf(out + n, sizeof(out) - n, spec, va_arg(ap, const char *));
        else if ( *f == 'p' )
            n += snprintf(out + n, sizeof(out) - n, spec, va_arg(ap, void *));
        else if ( strstr(spec, "l") )
            n += snprintf(out + n, sizeof(out) - n, spec, va_arg(ap, long));
        else
            n += snprintf(out + n, sizeof(out) - n, spec, va_arg(ap, int));
        if ( n >= sizeof(out) )
            n = sizeof(out) - 1;
    }
    va_end(ap);
    out[n] = 0;
    harness_ops.printk(out);
}

/* -- the hart's CSRs, as the tree's vmid.c and p2m.c use them ---------------------------- */

struct vcpu *harness_current[HARNESS_NR_CPUS];
static unsigned long csr_hgatp[HARNESS_NR_CPUS], csr_vsatp[HARNESS_NR_CPUS];
static unsigned long hgatp_vmid_bits; /* the hgatp.VMID bits the machine keeps (VMIDLEN; the field is WARL) */

unsigned int harness_cpu(void)
{
    if ( !hctx || hctx->cpu < 0 )
    {
        printk("smp_processor_id(): the C ran from the workload's driver, on no hart\n");
        BUG();
    }
    return (unsigned int)hctx->cpu;
}

static void not_modelled(const char *what)
{
    printk("%s: not run by p2msim (the model's Python glue does this)\n", what);
    BUG();
}

unsigned long csr_read(unsigned long csr)
{
    if ( csr == CSR_HGATP )
        return csr_hgatp[smp_processor_id()];
    if ( csr == CSR_VSATP )
        return csr_vsatp[smp_processor_id()];
    not_modelled("csr_read of this CSR");
    return 0;
}

void csr_write(unsigned long csr, unsigned long val)
{
    unsigned int cpu = smp_processor_id();

    if ( csr == CSR_VSATP ) /* no VS-stage in p2msim: kept, nothing else */
    {
        csr_vsatp[cpu] = val;
        return;
    }
    if ( csr != CSR_HGATP )
    {
        not_modelled("csr_write of this CSR");
        return;
    }
    val = (val & ~HGATP_VMID_MASK) | (val & hgatp_vmid_bits);
    csr_hgatp[cpu] = val;
    /*
     * vmidlen_detect()'s probe at bring-up (all-ones VMID, read back, then 0) is answered here and does
     * not reach the hart: nothing runs on it between the writes and it ends with the hgatp it began with.
     */
    if ( hctx->boot )
        return;
    harness_ops.hgatp(val);
    harness_check();
}

unsigned long csr_swap(unsigned long csr, unsigned long val)
{
    unsigned long old = csr_read(csr);

    csr_write(csr, val);
    return old;
}

void local_hfence_gvma_all(void)
{
    harness_ops.local_hfence();
    harness_check();
}

void flush_tlb_guest_local(void) { /* the VS-stage TLB: not modelled (p2msim has no VS-stage) */ }

/* every struct vcpu p2msim made, to know a write_atomic to a VMID generation when it sees one */
static struct vcpu **vcpus;
static int nr_vcpus, max_vcpus;

void harness_written(const volatile void *p)
{
    for ( int i = 0; i < nr_vcpus; i++ )
    {
        struct vcpu *v = vcpus[i];

        if ( p == &v->arch.vmid.generation && v->arch.vmid.generation ) /* 0: vmid_flush_vcpu */
        {
            harness_ops.vmid_assigned(v->domain->domain_id, v->vcpu_id, v->arch.vmid.vmid,
                                      v->arch.vmid.generation);
            harness_check();
            return;
        }
    }
}

/* boot options (boolean_param): the tree's default, and what p2msim set for this simulation */
#define HARNESS_PARAMS 32
static struct { const char *name; bool *var; bool dflt; } params[HARNESS_PARAMS];
static int nr_params;

void harness_boolean_param(const char *name, bool *var)
{
    if ( nr_params < HARNESS_PARAMS )
    {
        params[nr_params].name = name;
        params[nr_params].var = var;
        params[nr_params++].dflt = *var;
    }
}

/* 1 if the tree has the option (and it is set), 0 if it has not */
int h_boolean_param(const char *name, int val)
{
    for ( int i = 0; i < nr_params; i++ )
        if ( !strcmp(params[i].name, name) )
        {
            *params[i].var = val < 0 ? params[i].dflt : val;
            return 1;
        }
    return 0;
}

/* -- called from Python ------------------------------------------------------------ */

/*
 * A fault (SIGSEGV, SIGBUS) while the C runs unwinds it to its entry point, which returns H_FAULTED: the
 * hypervisor's C crashed, a finding, not a crash of p2msim.  Any other fault is not ours: the handler
 * that was there before (Python's faulthandler, the default) gets it.
 */
static struct sigaction old_segv, old_bus;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if ( hctx && hctx->in_c )
    {
        hctx->fault_sig = sig;
        hctx->fault_addr = si->si_addr;
        siglongjmp(hctx->jmp, 2);
    }
    sigaction(sig, sig == SIGSEGV ? &old_segv : &old_bus, NULL); /* the instruction faults again, theirs */
}

static void catch_faults(void)
{
    static int done;
    struct sigaction sa;

    if ( done++ )
        return;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER; /* not blocked after the jump: the next fault is caught too */
    sigemptyset(&sa.sa_mask);
    {
        static char altstack[64 * 1024]; /* the handler runs here: a fault may be the stack's own end */
        stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0 };

        sigaltstack(&ss, NULL);
        sa.sa_flags |= SA_ONSTACK;
    }
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

void h_in_c(int in_c) { if ( hctx ) hctx->in_c = in_c; }
int h_ctx_fault(struct harness_ctx *c, unsigned long *addr)
{
    *addr = (unsigned long)c->fault_addr;
    return c->fault_sig;
}

int h_init(unsigned long nr_frames, unsigned int paging_levels, unsigned char *direct_map, unsigned int vmid_bits)
{
    catch_faults();
    hgatp_vmid_bits = MASK_INSR((1UL << vmid_bits) - 1, HGATP_VMID_MASK);
    memset(harness_current, 0, sizeof(harness_current));
    memset(csr_hgatp, 0, sizeof(csr_hgatp));
    memset(csr_vsatp, 0, sizeof(csr_vsatp));
    for ( int i = 0; i < nr_params; i++ )
        *params[i].var = params[i].dflt;
    nr_vcpus = 0; /* the last simulation's vCPUs are not freed: Python may still hold them (as domains) */
    harness_direct_map = direct_map;
    static struct page_info *old_ft;
    static unsigned char *old_unpub;

    free(old_ft);
    free(old_unpub);
    old_ft = frame_table = calloc(nr_frames, sizeof(*frame_table));
    old_unpub = unpublished = calloc(nr_frames, 1);
    harness_nr_frames = nr_frames;
    memset(maps, 0, sizeof(maps));
    for ( unsigned int i = 1; i < ARRAY_SIZE(gstage_modes); i++ )
        if ( gstage_modes[i].paging_levels == paging_levels )
        {
            max_gstage_mode = &gstage_modes[i]; /* what gstage_mode_detect() would find */
            return (int)(P2M_GFN_LEVEL_SHIFT(paging_levels + 1) + P2M_ROOT_EXTRA_BITS);
        }
    return -1;
}

void h_set_op(int which, void *fn)
{
    void **ops = (void **)&harness_ops;

    ops[which] = fn;
}

struct harness_ctx *h_ctx_new(int cpu)
{
    struct harness_ctx *c = calloc(1, sizeof(struct harness_ctx));

    c->cpu = cpu;
    return c;
}
void h_ctx_free(struct harness_ctx *c) { if ( hctx == c ) hctx = NULL; free(c); }
struct harness_ctx *h_ctx_switch(struct harness_ctx *c) { struct harness_ctx *o = hctx; hctx = c; return o; }
void h_ctx_abort(struct harness_ctx *c) { c->aborted = 1; }
void h_abort_current(void) { if ( hctx ) hctx->aborted = 1; }
int h_ctx_frames(struct harness_ctx *c, void **out, int max)
{
    int n = c->depth < HARNESS_STACK ? c->depth : HARNESS_STACK;

    n = n < max ? n : max;
    for ( int i = 0; i < n; i++ )
        out[i] = c->stack[n - 1 - i]; /* innermost first */
    return n;
}

struct domain *h_domain_new(int domid, int gaddr_bits, int *rc)
{
    struct domain *d = calloc(1, sizeof(*d));
    struct xen_domctl_createdomain config = { .arch = { .gaddr_bits = (uint8_t)gaddr_bits } };

    d->domain_id = (domid_t)domid;
    d->dirty_cpumask = calloc(1, sizeof(cpumask_t));
    d->dirty_cpumask->domid = domid;
    d->arch.p2m.lock.domid = domid;
    d->arch.paging.lock.domid = domid;
    d->arch.paging.freelist.pool_of = domid + 1;
    if ( sigsetjmp(hctx->jmp, 0) )
        *rc = H_ABORTED;
    else
        *rc = p2m_init(d, &config);
    return d;
}

void h_domain_set_dying(struct domain *d, int dying) { d->is_dying = dying; }

/* struct p2m_domain's fields, for the model's Python glue (teardown, invariants) */
long h_p2m_get(struct domain *d, int field)
{
    struct p2m_domain *p2m = p2m_get_hostp2m(d);

    switch ( field )
    {
    case 0: return p2m->root ? (long)mfn_x(page_to_mfn(p2m->root)) : -1;
    case 1: return p2m->need_flush;
    case 2: return (long)gfn_x(p2m->lowest_mapped_gfn);
    case 3: return (long)gfn_x(p2m->max_mapped_gfn);
    }
    return 0;
}

void h_p2m_set(struct domain *d, int field, long val)
{
    struct p2m_domain *p2m = p2m_get_hostp2m(d);

    switch ( field )
    {
    case 1: p2m->need_flush = val; break;
    case 2: p2m->lowest_mapped_gfn = _gfn((unsigned long)val); break;
    case 3: p2m->max_mapped_gfn = _gfn((unsigned long)val); break;
    }
}

/* p2m->pages from its tail (the oldest first: the order the model's glue walks p2m->pages in) */
long h_pages_last(struct domain *d)
{
    struct page_info *pg = page_list_last(&p2m_get_hostp2m(d)->pages);

    return pg ? (long)mfn_x(page_to_mfn(pg)) : -1;
}
long h_pages_prev(struct domain *d, unsigned long mfn)
{
    struct page_info *pg = frame_table[mfn].list.prev;

    (void)d;
    return pg ? (long)mfn_x(page_to_mfn(pg)) : -1;
}
unsigned long h_nr_frames(void) { return harness_nr_frames; }
void h_pages_del(struct domain *d, unsigned long mfn) { page_list_del(&frame_table[mfn], &p2m_get_hostp2m(d)->pages); }

long h_md_pg(unsigned long mfn) { return frame_table[mfn].v.md.pg ? (long)mfn_x(page_to_mfn(frame_table[mfn].v.md.pg)) : -1; }
long h_used_entries(unsigned long mfn) { return (long)frame_table[mfn].u.md.used_entries; }
void h_set_used_entries(unsigned long mfn, long v) { frame_table[mfn].u.md.used_entries = (unsigned long)v; }
void h_set_unpublished(unsigned long mfn) { unpublished[mfn] = 1; }
/* from Python between two steps (invariants): no map slot, no BUG (it would unwind another call's C) */
int h_md_type(unsigned long md, unsigned int idx)
{
    const struct md_t *m = (const struct md_t *)(harness_direct_map + md * PAGE_SIZE);

    return m[idx].type;
}

#define H_ENTER(c) \
    hctx = (c); \
    (c)->in_c = 1; \
    switch ( sigsetjmp((c)->jmp, 0) ) \
    { \
    case 0: break; \
    case 2: (c)->in_c = 0; return H_FAULTED; \
    default: (c)->in_c = 0; return H_ABORTED; \
    }

int h_map_regions_p2mt(struct harness_ctx *c, struct domain *d, unsigned long gfn, unsigned long nr,
                       unsigned long mfn, int t)
{
    H_ENTER(c);
    return map_regions_p2mt(d, _gfn(gfn), nr, _mfn(mfn), t);
}

int h_p2m_set_range(struct harness_ctx *c, struct domain *d, unsigned long gfn, unsigned long nr,
                    unsigned long mfn, int t)
{
    H_ENTER(c);
    return p2m_set_range(p2m_get_hostp2m(d), _gfn(gfn), nr, _mfn(mfn), t);
}

int h_p2m_set_entry(struct harness_ctx *c, struct domain *d, unsigned long gfn, unsigned long order,
                    unsigned long mfn, int t)
{
    H_ENTER(c);
    return p2m_set_entry(p2m_get_hostp2m(d), _gfn(gfn), order, _mfn(mfn), t);
}

int h_p2m_get_entry(struct harness_ctx *c, struct domain *d, unsigned long gfn, unsigned long *mfn, int *t,
                    unsigned int *order)
{
    p2m_type_t pt;

    H_ENTER(c);
    *mfn = mfn_x(p2m_get_entry(p2m_get_hostp2m(d), _gfn(gfn), &pt, order));
    *t = pt;
    return 0;
}

int h_p2m_write_unlock(struct harness_ctx *c, struct domain *d)
{
    H_ENTER(c);
    p2m_write_unlock(p2m_get_hostp2m(d));
    return 0;
}

int h_p2m_tlb_flush_sync(struct harness_ctx *c, struct domain *d)
{
    H_ENTER(c);
    p2m_tlb_flush_sync(p2m_get_hostp2m(d));
    return 0;
}

int h_p2m_tlb_flush(struct harness_ctx *c, struct domain *d)
{
    H_ENTER(c);
    p2m_tlb_flush(p2m_get_hostp2m(d));
    return 0;
}

int h_p2m_set_allocation(struct harness_ctx *c, struct domain *d, unsigned long pages, int can_preempt)
{
    H_ENTER(c);
    return p2m_set_allocation(d, pages, can_preempt);
}

int h_p2m_free_page(struct harness_ctx *c, struct domain *d, unsigned long mfn)
{
    H_ENTER(c);
    p2m_free_page(p2m_get_hostp2m(d), mfn_to_page(_mfn(mfn)));
    return 0;
}

int h_p2m_free_metadata_page(struct harness_ctx *c, struct domain *d, unsigned long table)
{
    H_ENTER(c);
    p2m_free_metadata_page(p2m_get_hostp2m(d), &mfn_to_page(_mfn(table))->v.md.pg);
    return 0;
}

/* the probe at the top of p2m_free_subtree: a leaf whose type lives in the metadata page */
void harness_probe_free_subtree(struct p2m_domain *p2m, pte_t entry, const struct p2m_pte_ctx *ctx)
{
    struct page_info *md_pg;
    const struct md_t *md;
    int t;

    if ( !pte_is_valid(entry) || !pte_is_mapping(entry) ||
         MASK_EXTR(entry.pte, P2M_TYPE_PTE_BITS_MASK) != p2m_ext_storage )
        return;
    md_pg = ctx->pt_page->v.md.pg;
    if ( !md_pg )
        return;
    md = map_domain_page(page_to_mfn(md_pg));
    t = md[ctx->index].type;
    unmap_domain_page(md);
    harness_ops.leaf(p2m->domain->domain_id, mfn_x(page_to_mfn(ctx->pt_page)), ctx->index, ctx->level, entry.pte, t);
    harness_check();
}

/* a page entered (op 0) or left (1) a domain's pool freelist: the frame's life changes */
void harness_pool_list(const struct page_list_head *head, int op, struct page_info *pg)
{
    harness_pool(op ? H_POOL_REMOVED : H_POOL_ADDED, head->pool_of - 1, mfn_x(page_to_mfn(pg)),
                 hctx ? hctx->md_table : -1);
}

/* the pool, for the model's glue and invariants */
long h_pool_total(struct domain *d) { return (long)d->arch.paging.total_pages; }
long h_pool_first(struct domain *d)
{
    struct page_info *pg = page_list_first(&d->arch.paging.freelist);

    return pg ? (long)mfn_x(page_to_mfn(pg)) : -1;
}
long h_pool_next(unsigned long mfn)
{
    struct page_info *pg = frame_table[mfn].list.next;

    return pg ? (long)mfn_x(page_to_mfn(pg)) : -1;
}

/* the probe at the top of p2m_set_type: which table a metadata page is allocated for */
void harness_probe_set_type(pte_t *pte, p2m_type_t t, const struct p2m_pte_ctx *ctx)
{
    (void)pte;
    (void)t;
    if ( hctx && ctx && ctx->pt_page )
        hctx->md_table = (long)mfn_x(page_to_mfn(ctx->pt_page));
}

/* the probe at the top of p2m_free_page */
void harness_probe_free_page(struct p2m_domain *p2m, struct page_info *pg)
{
    harness_ops.free_page(p2m->domain->domain_id, mfn_x(page_to_mfn(pg)));
    harness_check();
}

/* -- vmid.c and the context switch (p2m.c) ----------------------------------------- */

struct vcpu *h_vcpu_new(struct domain *d, int vcpu_id)
{
    struct vcpu *v = calloc(1, sizeof(*v));

    v->vcpu_id = vcpu_id;
    v->domain = d;
    if ( nr_vcpus == max_vcpus )
    {
        max_vcpus = max_vcpus ? 2 * max_vcpus : 64;
        vcpus = realloc(vcpus, max_vcpus * sizeof(*vcpus));
    }
    vcpus[nr_vcpus++] = v;
    return v;
}

/* v->arch.vmid, for the model's glue and the log: 0 the VMID, 1 the generation */
unsigned long h_vcpu_get(struct vcpu *v, int field) { return field ? v->arch.vmid.generation : v->arch.vmid.vmid; }
void h_vcpu_set(struct vcpu *v, int field, unsigned long val)
{
    if ( field )
        v->arch.vmid.generation = val;
    else
        v->arch.vmid.vmid = (uint16_t)val;
}

void h_set_current(int cpu, struct vcpu *v) { harness_current[cpu] = v; }

/* this_cpu(vmid_data) of a hart: 0 generation, 1 next_vmid, 2 max_vmid, 3 used */
unsigned long h_vmid_data_get(int cpu, int field)
{
    struct vmid_data *data = &per_cpu(vmid_data, cpu);

    switch ( field )
    {
    case 0: return data->generation;
    case 1: return data->next_vmid;
    case 2: return data->max_vmid;
    }
    return data->used;
}

void h_vmid_data_set(int cpu, int field, unsigned long val)
{
    struct vmid_data *data = &per_cpu(vmid_data, cpu);

    switch ( field )
    {
    case 0: data->generation = val; break;
    case 1: data->next_vmid = (uint16_t)val; break;
    case 2: data->max_vmid = (uint16_t)val; break;
    default: data->used = val; break;
    }
}

int h_vmid_init(struct harness_ctx *c)
{
    H_ENTER(c);
    c->boot = 1;
    vmid_init();
    c->boot = 0;
    return 0;
}

int h_vmid_flush_vcpu(struct harness_ctx *c, struct vcpu *v)
{
    H_ENTER(c);
    vmid_flush_vcpu(v);
    return 0;
}

int h_vmid_handle_vmenter(struct harness_ctx *c, struct vcpu *v)
{
    H_ENTER(c);
    return vmid_handle_vmenter(&v->arch.vmid);
}

int h_p2m_ctxt_switch_from(struct harness_ctx *c, struct vcpu *p)
{
    H_ENTER(c);
    p2m_ctxt_switch_from(p);
    return 0;
}

int h_p2m_ctxt_switch_to(struct harness_ctx *c, struct vcpu *n)
{
    H_ENTER(c);
    p2m_ctxt_switch_to(n);
    return 0;
}

int h_p2m_handle_vmenter(struct harness_ctx *c)
{
    H_ENTER(c);
    p2m_handle_vmenter();
    return 0;
}

/* the probe at the top of vmid_flush_hart: the step the model takes there (an instruction boundary) */
void harness_probe_flush_hart(void)
{
    harness_ops.step();
    harness_check();
}
