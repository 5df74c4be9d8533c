/*
 * xdpparse.c - the parser and the built-in programs of xdp-bench redirect-cpu
 * (xdp-tools xdp-bench/xdp_redirect_cpumap.bpf.c and hash_func01.h).  The
 * record, the deviations and the contracts are in xdpparse.h.
 *
 * Every read is bounds-checked against len first, as the verifier makes the
 * BPF program do ("if (iph + 1 > data_end) return 0"), and the loads are
 * byte-wise or memcpy, so no alignment is assumed.
 */
#include <string.h>

#include "xdpparse.h"

const char *const pk_xdp_mode_names[PK_XDP_NR_MODES] = {
	[PK_XDP_MODE_NO_TOUCH]		= "no-touch",
	[PK_XDP_MODE_TOUCH]		= "touch",
	[PK_XDP_MODE_ROUND_ROBIN]	= "round-robin",
	[PK_XDP_MODE_L4_PROTO]		= "l4-proto",
	[PK_XDP_MODE_L4_FILTER]		= "l4-filter",
	[PK_XDP_MODE_L4_HASH]		= "l4-hash",
	[PK_XDP_MODE_L4_SPORT]		= "l4-sport",
	[PK_XDP_MODE_L4_DPORT]		= "l4-dport",
};

static inline uint16_t ld_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t ld_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A __be32 field loaded as the BPF program loads it: a native u32. */
static inline uint32_t ld_raw32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline int is_vlan(uint16_t proto)
{
	return proto == PK_ETH_P_8021Q || proto == PK_ETH_P_8021AD;
}

int pk_xdp_parse(const uint8_t *pkt, uint32_t len, struct pk_xdp_hdr *out)
{
	uint32_t off = PK_ETH_HLEN, l4, sum;
	uint16_t proto;
	unsigned int ihl, i;

	memset(out, 0, sizeof(*out));
	out->len = len;
	if (len < PK_ETH_HLEN)
		return 0;

	/* parse_eth(): refuse non-802.3 EtherTypes, then up to two VLAN tags */
	proto = ld_be16(pkt + 12);
	out->eth_proto = proto;
	if (proto < PK_ETH_P_802_3_MIN)
		return 0;
	for (i = 0; i < 2 && is_vlan(proto); i++) {
		if (len < off + 4)
			return 0;	/* eth_proto stays the TPID of the cut tag */
		proto = ld_be16(pkt + off + 2);	/* h_vlan_encapsulated_proto */
		off += 4;
		out->eth_proto = proto;
	}
	out->flags = PK_XDP_F_ETH;

	switch (proto) {
	case PK_ETH_P_IP:
		if (len < off + 20)
			return out->flags;
		out->ip_proto = pkt[off + 9];
		out->saddr = ld_be32(pkt + off + 12);
		out->daddr = ld_be32(pkt + off + 16);
		out->cpu_hash_in = ld_raw32(pkt + off + 12) + ld_raw32(pkt + off + 16);
		out->flags |= PK_XDP_F_IPV4;
		ihl = pkt[off] & 0xfu;
		if (ihl < 5)
			return out->flags;
		l4 = off + 4 * ihl;
		break;
	case PK_ETH_P_IPV6:
		if (len < off + 40)
			return out->flags;
		out->ip_proto = pkt[off + 6];
		for (sum = 0, i = 0; i < 8; i++)
			sum += ld_raw32(pkt + off + 8 + 4 * i);
		out->cpu_hash_in = sum;
		out->flags |= PK_XDP_F_IPV6;
		l4 = off + 40;
		break;
	default:
		return out->flags;
	}

	/* get_port_*(): a whole struct tcphdr (20 bytes) or udphdr (8 bytes) */
	if ((out->ip_proto == PK_IPPROTO_TCP && len >= l4 + 20) ||
	    (out->ip_proto == PK_IPPROTO_UDP && len >= l4 + 8)) {
		out->sport = ld_be16(pkt + l4);
		out->dport = ld_be16(pkt + l4 + 2);
		out->flags |= PK_XDP_F_PORTS;
	}
	return out->flags;
}

static inline uint16_t ld_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

#define get16bits(d)	((uint32_t)ld_le16((const uint8_t *)(d)))

/*
 * Paul Hsieh's SuperFastHash as hash_func01.h has it.  get16bits there is a
 * native u16 load; this assumes a little-endian host like the rest of the
 * record.  The (signed char) terms are converted through int32_t before the
 * unsigned arithmetic, which is the two's-complement result the header gets
 * (without its signed left shift).
 */
uint32_t pk_super_fast_hash(const char *data, int len, uint32_t initval)
{
	uint32_t hash = initval, tmp;
	int rem;

	if (len <= 0 || data == NULL)
		return 0;

	rem = len & 3;
	len >>= 2;

	for (; len > 0; len--) {
		hash += get16bits(data);
		tmp = (get16bits(data + 2) << 11) ^ hash;
		hash = (hash << 16) ^ tmp;
		data += 2 * sizeof(uint16_t);
		hash += hash >> 11;
	}

	switch (rem) {
	case 3:
		hash += get16bits(data);
		hash ^= hash << 16;
		hash ^= (uint32_t)(int32_t)(signed char)data[sizeof(uint16_t)] << 18;
		hash += hash >> 11;
		break;
	case 2:
		hash += get16bits(data);
		hash ^= hash << 11;
		hash += hash >> 17;
		break;
	case 1:
		hash += (uint32_t)(int32_t)(signed char)*data;
		hash ^= hash << 10;
		hash += hash >> 1;
	}

	hash ^= hash << 3;
	hash += hash >> 5;
	hash ^= hash << 4;
	hash += hash >> 17;
	hash ^= hash << 25;
	hash += hash >> 6;

	return hash;
}

/*
 * The L4 protocol the l4-proto/l4-filter switch sees: ip_proto starts as
 * IPPROTO_UDP and only IPv4/IPv6 frames overwrite it (with 0 when the header
 * is cut short), so ARP and other non-IP frames go to index 1, not 0.
 */
static inline uint8_t switch_proto(const struct pk_xdp_hdr *h)
{
	if (h->eth_proto == PK_ETH_P_IP || h->eth_proto == PK_ETH_P_IPV6)
		return h->ip_proto;
	return PK_IPPROTO_UDP;
}

/* cpu_hash % *cpu_max as BPF_MOD computes it: x % 0 leaves x. */
static inline uint32_t bpf_mod(uint32_t x, uint32_t n)
{
	return n ? x % n : x;
}

int pk_xdp_builtin(int mode, const struct pk_xdp_hdr *h, const uint8_t *pkt,
		   struct pk_xdp_prog_state *st, uint32_t *key)
{
	uint16_t eth_type;
	uint32_t hash;

	*key = 0;
	switch (mode) {
	case PK_XDP_MODE_NO_TOUCH:
		return PK_XDP_REDIRECT;

	case PK_XDP_MODE_TOUCH:
		if (h->len < PK_ETH_HLEN)
			return PK_XDP_ABORTED;
		if (pkt != NULL)
			eth_type = ld_be16(pkt + 12);
		else	/* parse_eth() took it, or refused it (outer < 0x600 or cut VLAN tag) */
			eth_type = (h->flags & PK_XDP_F_ETH) ? PK_ETH_P_802_3_MIN : h->eth_proto;
		if (eth_type < PK_ETH_P_802_3_MIN)
			return PK_XDP_DROP;
		return PK_XDP_REDIRECT;

	case PK_XDP_MODE_ROUND_ROBIN:
		*key = st->rr_iter;
		if (++st->rr_iter >= st->cpus_count)
			st->rr_iter = 0;
		return PK_XDP_REDIRECT;

	case PK_XDP_MODE_L4_PROTO:
	case PK_XDP_MODE_L4_FILTER:
		if (!(h->flags & PK_XDP_F_ETH))
			return PK_XDP_PASS;
		switch (switch_proto(h)) {
		case PK_IPPROTO_ICMP:
		case PK_IPPROTO_ICMPV6:
			*key = 2;
			break;
		case PK_IPPROTO_UDP:
			/* DDoS filter UDP port 9 (pktgen) */
			if (mode == PK_XDP_MODE_L4_FILTER && (h->flags & PK_XDP_F_IPV4) &&
			    (h->flags & PK_XDP_F_PORTS) && h->dport == 9) {
				return PK_XDP_DROP;
			}
			*key = 1;
			break;
		default:	/* TCP and the rest */
			*key = 0;
		}
		return PK_XDP_REDIRECT;

	case PK_XDP_MODE_L4_HASH:
		if (!(h->flags & PK_XDP_F_ETH))
			return PK_XDP_PASS;
		hash = 0;	/* ARP, non-IP, cut IP header */
		if (h->flags & (PK_XDP_F_IPV4 | PK_XDP_F_IPV6))
			hash = pk_super_fast_hash((const char *)&h->cpu_hash_in, 4,
						  PK_XDP_HASH_INITVAL + h->ip_proto);
		*key = bpf_mod(hash, st->cpus_count);
		return PK_XDP_REDIRECT;

	case PK_XDP_MODE_L4_SPORT:
	case PK_XDP_MODE_L4_DPORT:
		if (!(h->flags & PK_XDP_F_ETH))
			return PK_XDP_PASS;
		if (h->flags & PK_XDP_F_PORTS)
			*key = bpf_mod(mode == PK_XDP_MODE_L4_SPORT ? h->sport : h->dport,
				       st->cpus_count);
		return PK_XDP_REDIRECT;

	default:
		return PK_XDP_ABORTED;
	}
}

uint32_t pk_xdp_run(int mode, const struct pk_xdp_hdr *h, uint32_t n,
		    const uint8_t *pkt_base, const uint32_t *offsets,
		    struct pk_xdp_prog_state *st, uint8_t *actions, uint32_t *keys)
{
	uint32_t i, dropped = 0;
	int act;

	for (i = 0; i < n; i++) {
		act = pk_xdp_builtin(mode, &h[i], (pkt_base && offsets) ? pkt_base + offsets[i] : NULL,
				     st, &keys[i]);
		actions[i] = (uint8_t)act;
		dropped += act == PK_XDP_DROP;
	}
	return dropped;
}
