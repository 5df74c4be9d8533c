/*
 * xdpparse.h - header parsing and the CPU-selection programs of xdp-bench
 * redirect-cpu (xdp-tools xdp-bench/xdp_redirect_cpumap.bpf.c, with the
 * SuperFastHash of xdp-bench/hash_func01.h), in plain C.
 *
 * pk_xdp_parse() reads one frame once, the way the BPF programs' helpers do
 * (parse_eth(), get_proto_ipv4/6(), get_port_*(), get_ipv4/6_hash_ip_pair()),
 * and leaves what they look at in a 32-byte record; pk_xdp_builtin() is then
 * one of the programs, deciding from the record alone:
 *
 *  struct pk_xdp_hdr (little-endian; numpy HDR_DTYPE in percpu.xdp.programs)
 *  +0  len          u32   frame length
 *  +4  eth_proto    u16   EtherType after <= 2 VLAN tags; see below
 *  +6  ip_proto     u8    IPv4 protocol / IPv6 nexthdr, 0 if no L3 header
 *  +7  flags        u8    PK_XDP_F_*
 *  +8  saddr daddr  u32x2 IPv4 addresses, host order (0 for IPv6)
 *  +16 cpu_hash_in  u32   xdp-bench's pre-hash, see below
 *  +20 sport dport  u16x2 host order, 0 unless PK_XDP_F_PORTS
 *  +24 ifindex rxq  u32x2 the caller's (xdp_md.ingress_ifindex/rx_queue_index)
 *
 * eth_proto: 0 when len < 14; otherwise the last EtherType read, so a frame
 * parse_eth() refused has either its outer EtherType (< 0x600, the frames
 * cpumap_touch_data drops) or the VLAN TPID whose tag was cut off.
 * cpu_hash_in: the u32 sum the BPF program feeds to SuperFastHash: IPv4
 * saddr + daddr, IPv6 the eight address words, each a raw __be32 load added
 * as a native u32 (so it is symmetric in source and destination).
 *
 * Deviations from the BPF source (the record cannot hold the bytes those
 * quirks read; each only changes frames no sane stack sends):
 * - IPv4 ports are read after ihl * 4 bytes (the BPF reads them at +20, inside
 *   the options when there are any); ihl < 5 gives no ports.
 * - l4-sport/l4-dport take TCP ports over IPv6 (the BPF's get_port_ipv6_tcp
 *   tests nexthdr == IPPROTO_UDP, so IPv6 TCP always maps to port 0).
 * - l4-filter drops UDP port 9 of IPv4 only; the BPF also applies its IPv4
 *   reader to IPv6 and non-IP frames (it reads address bytes as a protocol).
 * - round-robin wraps with >= (the fix of later xdp-tools), not ==.
 * - cpus_count == 0: key = hash or port unchanged (BPF_MOD by zero leaves the
 *   dividend); the caller's cpus_available lookup then misses -> XDP_ABORTED.
 *
 * Not Python: no allocation, no global state; every function is MT-safe on
 * distinct state structs and never reads pkt[len] or beyond.
 */
#ifndef PK_XDPPARSE_H
#define PK_XDPPARSE_H

#include <stdint.h>

#include "compat.h"

/* enum xdp_action */
#define PK_XDP_ABORTED		0
#define PK_XDP_DROP		1
#define PK_XDP_PASS		2
#define PK_XDP_TX		3
#define PK_XDP_REDIRECT		4

/* xdp-bench redirect-cpu --program-mode, in its order */
#define PK_XDP_MODE_NO_TOUCH	0
#define PK_XDP_MODE_TOUCH	1
#define PK_XDP_MODE_ROUND_ROBIN	2
#define PK_XDP_MODE_L4_PROTO	3
#define PK_XDP_MODE_L4_FILTER	4
#define PK_XDP_MODE_L4_HASH	5
#define PK_XDP_MODE_L4_SPORT	6
#define PK_XDP_MODE_L4_DPORT	7
#define PK_XDP_NR_MODES		8

extern const char *const pk_xdp_mode_names[PK_XDP_NR_MODES];

/* struct pk_xdp_hdr.flags */
#define PK_XDP_F_ETH		0x01u	/* parse_eth() succeeded */
#define PK_XDP_F_IPV4		0x02u	/* 20-byte IPv4 header present */
#define PK_XDP_F_IPV6		0x04u	/* 40-byte IPv6 header present */
#define PK_XDP_F_PORTS		0x08u	/* TCP (20 bytes) or UDP (8 bytes) header present */

#define PK_ETH_HLEN		14
#define PK_ETH_P_802_3_MIN	0x0600
#define PK_ETH_P_IP		0x0800
#define PK_ETH_P_ARP		0x0806
#define PK_ETH_P_8021Q		0x8100
#define PK_ETH_P_8021AD		0x88A8
#define PK_ETH_P_IPV6		0x86DD
#define PK_IPPROTO_ICMP		1
#define PK_IPPROTO_TCP		6
#define PK_IPPROTO_UDP		17
#define PK_IPPROTO_ICMPV6	58

#define PK_XDP_HASH_INITVAL	15485863u	/* INITVAL of the BPF source */

struct pk_xdp_hdr {
	uint32_t len;
	uint16_t eth_proto;
	uint8_t ip_proto;
	uint8_t flags;
	uint32_t saddr, daddr;
	uint32_t cpu_hash_in;
	uint16_t sport, dport;
	uint32_t ifindex, rxq;
};
_Static_assert(sizeof(struct pk_xdp_hdr) == 32, "struct pk_xdp_hdr is 32 bytes");

/*
 * The per-RX-CPU state of a program: cpus_count (the BPF map of that name)
 * and cpus_iterator (its PERCPU_ARRAY slot).  Owned by one RX thread.
 */
struct pk_xdp_prog_state {
	uint32_t cpus_count;
	uint32_t rr_iter;
};

/*
 * pk_xdp_parse - fill *out from the frame pkt[0, len).  ifindex and rxq are
 * zeroed (the caller's).  Returns out->flags.  Never fails.
 */
int pk_xdp_parse(const uint8_t *pkt, uint32_t len, struct pk_xdp_hdr *out);

/* SuperFastHash() of hash_func01.h, bit for bit (len <= 0 or NULL data: 0). */
uint32_t pk_super_fast_hash(const char *data, int len, uint32_t initval);

/*
 * pk_xdp_builtin - run program 'mode' on one parsed frame.
 * xdp-bench cpumap_no_touch ... cpumap_l4_dport.
 *
 * Returns the XDP action; for PK_XDP_REDIRECT, *key is the index into
 * cpus_available (the caller resolves the CPU, counts 'issue' when it is
 * >= nr_cpus, and redirects); otherwise *key is 0.  XDP_DROP is the program's
 * own drop (the rx 'dropped' counter).  h may be NULL for no-touch and
 * round-robin; pkt, when not NULL, is the frame of h->len bytes: touch then
 * reads its EtherType from it, as cpumap_touch_data does.  Unknown mode: XDP_ABORTED.
 * Round-robin advances st->rr_iter; nothing else writes *st.
 */
int pk_xdp_builtin(int mode, const struct pk_xdp_hdr *h, const uint8_t *pkt,
		   struct pk_xdp_prog_state *st, uint32_t *key);

/*
 * pk_xdp_run - pk_xdp_builtin() over n records: actions[i], keys[i].
 * pkt_base/offsets may be NULL (no packet bytes).  Returns how many frames
 * the program dropped (XDP_DROP).
 */
uint32_t pk_xdp_run(int mode, const struct pk_xdp_hdr *h, uint32_t n,
		    const uint8_t *pkt_base, const uint32_t *offsets,
		    struct pk_xdp_prog_state *st, uint8_t *actions, uint32_t *keys);

#endif /* PK_XDPPARSE_H */
