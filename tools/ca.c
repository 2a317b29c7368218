/* SPDX-License-Identifier: MIT */
/*
 * edgebridge ca init|intermediate|sign|crl: a development CA, for labs and
 * tests, made with OpenSSL's C API (no openssl(1) in between).
 *
 * A CA directory D holds, like `openssl ca` would:
 *   ca.key      the CA's private key (0600)
 *   ca.pem      the CA certificate
 *   chain.pem   ca.pem and every CA above it, up to the root
 *   serial      the next serial number (hex)
 *   index.txt   the text database of what D issued (V/R lines)
 *   crlnumber   the next CRL number (hex)
 *
 * The extensions follow the usual v3_ca / v3_signed sections: CAs get
 * basicConstraints critical CA:TRUE[,pathlen], keyUsage critical
 * keyCertSign,cRLSign; devices get CA:FALSE, digitalSignature
 * (+keyEncipherment for RSA) and extendedKeyUsage clientAuth; all get
 * subject and authority key identifiers.  Everything that changes D is
 * done under flock(index.txt), so two signers do not share a serial.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "../hsm/hsm.h"
#include "tool.h"

#define MAX_CHAIN 10
#define DAY 86400L

static inline void x509p(X509 **x)
{
	X509_free(*x);
}
static inline void pkeyp(EVP_PKEY **k)
{
	EVP_PKEY_free(*k);
}
static inline void reqp(X509_REQ **r)
{
	X509_REQ_free(*r);
}
static inline void crlp(X509_CRL **c)
{
	X509_CRL_free(*c);
}
static inline void asn1intp(ASN1_INTEGER **i)
{
	ASN1_INTEGER_free(*i);
}
static inline void bnp(BIGNUM **b)
{
	BN_free(*b);
}
static inline void filep(FILE **f)
{
	if (*f)
		fclose(*f);
}

struct ca {
	char dir[PATH_MAX];
	X509 *cert;
	EVP_PKEY *key;
	X509 *chain[MAX_CHAIN]; /* chain.pem: this CA up to the root */
	size_t n_chain;
	int lock_fd;
};

static void ca_free(struct ca *ca)
{
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	for (size_t i = 0; i < ca->n_chain; i++)
		X509_free(ca->chain[i]);
	if (ca->lock_fd >= 0)
		close(ca->lock_fd); /* releases the flock */
	memset(ca, 0, sizeof(*ca));
	ca->lock_fd = -1;
}

/* The OpenSSL error queue as one line, for "...: <why>". */
static const char *ossl_why(void)
{
	static char buf[512];

	hsm_openssl_errors(buf, sizeof(buf));
	return buf[0] ? buf : "unknown OpenSSL error";
}

static int path_in(char *buf, size_t len, const char *dir, const char *name)
{
	if ((size_t)snprintf(buf, len, "%s/%s", dir, name) >= len) {
		tool_err("path too long: %s/%s", dir, name);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* --- options ------------------------------------------------------------ */

static int parse_num(const char *cmd, const char *opt, const char *s, long min,
		     long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		tool_err("%s: %s must be a number from %ld to %ld, not '%s'",
			 cmd, opt, min, max, s);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int bad_option(const char *cmd, int c, char **argv)
{
	if (c == ':')
		tool_err("%s: %s needs a value", cmd, argv[optind - 1]);
	else
		tool_err("%s: unknown option '%s' (see edgebridge --help)", cmd,
			 argv[optind - 1]);
	return 2;
}

/* --- files ---------------------------------------------------------------- */

/* tool_write_certs()/eb_write_file(), saying what failed. */
static int write_certs(const char *path, X509 *const *certs, size_t n)
{
	int r = tool_write_certs(path, certs, n);

	if (r < 0)
		tool_err("cannot write %s: %s", path, strerror(-r));
	return r;
}

static int write_text(const char *path, const char *text)
{
	int r = eb_write_file(path, text, strlen(text), 0644);

	if (r < 0)
		tool_err("cannot write %s: %s", path, strerror(-r));
	return r;
}

/* The key file is created 0600 and never overwritten. */
static int write_key(const char *path, EVP_PKEY *key)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	BIO *bio;
	int ok;

	if (fd < 0) {
		tool_err("cannot create %s: %s", path, strerror(errno));
		return -errno;
	}
	fchmod(fd, 0600); /* whatever the umask */
	bio = BIO_new_fd(fd, BIO_CLOSE);
	if (!bio) {
		close(fd);
		return -ENOMEM;
	}
	ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	ok = ok && BIO_flush(bio) == 1 && fsync(fd) == 0;
	BIO_free(bio);
	if (!ok) {
		tool_err("cannot write %s: %s", path, ossl_why());
		unlink(path);
		return -EIO;
	}
	return 0;
}

/* Loads D's certificate, key and chain; with lock, also takes D's lock. */
static int ca_load(struct ca *ca, const char *dir, bool lock)
{
	char path[PATH_MAX];
	BIO *bio;

	memset(ca, 0, sizeof(*ca));
	ca->lock_fd = -1;
	eb_strlcpy(ca->dir, dir, sizeof(ca->dir));
	if (path_in(path, sizeof(path), dir, "ca.pem"))
		return -ENAMETOOLONG;
	bio = BIO_new_file(path, "r");
	ca->cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (!ca->cert) {
		tool_err("cannot read the CA certificate %s: %s (is %s a CA "
			 "directory made by `edgebridge ca init`?)",
			 path, ossl_why(), dir);
		return -ENOENT;
	}
	if (path_in(path, sizeof(path), dir, "ca.key"))
		return -ENAMETOOLONG;
	bio = BIO_new_file(path, "r");
	ca->key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (!ca->key) {
		tool_err("cannot read the CA key %s: %s", path, ossl_why());
		return -ENOENT;
	}
	if (X509_check_private_key(ca->cert, ca->key) != 1) {
		ERR_clear_error();
		tool_err("%s/ca.key does not belong to %s/ca.pem: restore the "
			 "pair",
			 dir, dir);
		return -EINVAL;
	}
	if (path_in(path, sizeof(path), dir, "chain.pem"))
		return -ENAMETOOLONG;
	if (tool_read_certs(path, ca->chain, MAX_CHAIN, &ca->n_chain) < 0) {
		ca->chain[0] = X509_dup(ca->cert); /* a root alone */
		ca->n_chain = ca->chain[0] ? 1 : 0;
	}
	if (lock) {
		if (path_in(path, sizeof(path), dir, "index.txt"))
			return -ENAMETOOLONG;
		ca->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (ca->lock_fd < 0 || flock(ca->lock_fd, LOCK_EX)) {
			tool_err("cannot lock %s: %s", path, strerror(errno));
			return -errno;
		}
	}
	return 0;
}

/* --- serials and the index ------------------------------------------------ */

static int read_hex_file(const char *dir, const char *name, BIGNUM **bn)
{
	char path[PATH_MAX], buf[128];
	_cleanup_(filep) FILE *f = NULL;
	size_t len;

	if (path_in(path, sizeof(path), dir, name))
		return -ENAMETOOLONG;
	f = fopen(path, "re");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		tool_err("cannot read %s: %s (is %s a CA directory?)", path,
			 f ? "empty" : strerror(errno), dir);
		return -ENOENT;
	}
	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	*bn = NULL;
	if (!len || BN_hex2bn(bn, buf) != (int)len) {
		BN_free(*bn);
		*bn = NULL;
		tool_err("%s: '%s' is not a hex number: repair the file", path,
			 buf);
		return -EINVAL;
	}
	return 0;
}

static int write_hex_file(const char *dir, const char *name, const BIGNUM *bn)
{
	char path[PATH_MAX], text[160];
	char *hex = BN_bn2hex(bn);
	int r;

	if (!hex)
		return -ENOMEM;
	snprintf(text, sizeof(text), "%s\n", hex);
	OPENSSL_free(hex);
	if (path_in(path, sizeof(path), dir, name))
		return -ENAMETOOLONG;
	r = write_text(path, text);
	return r;
}

/* The number in D/name now; D/name then holds the next one. */
static ASN1_INTEGER *take_number(const char *dir, const char *name)
{
	_cleanup_(bnp) BIGNUM *bn = NULL;
	ASN1_INTEGER *ai;

	if (read_hex_file(dir, name, &bn) < 0)
		return NULL;
	ai = BN_to_ASN1_INTEGER(bn, NULL);
	if (!ai || !BN_add_word(bn, 1) || write_hex_file(dir, name, bn) < 0) {
		ASN1_INTEGER_free(ai);
		return NULL;
	}
	return ai;
}

static char *serial_hex(const ASN1_INTEGER *ai)
{
	_cleanup_(bnp) BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	char *s = hex ? strdup(hex) : NULL;

	OPENSSL_free(hex);
	return s;
}

/* "V<TAB>expiry<TAB><TAB>serial<TAB>unknown<TAB>/CN=..." as openssl ca. */
static int index_append(const char *dir, X509 *x)
{
	char path[PATH_MAX], subj[512];
	const ASN1_TIME *na = X509_get0_notAfter(x);
	_cleanup_free_ char *hex = serial_hex(X509_get0_serialNumber(x));
	_cleanup_(filep) FILE *f = NULL;

	if (path_in(path, sizeof(path), dir, "index.txt"))
		return -ENAMETOOLONG;
	if (!hex)
		return -ENOMEM;
	X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
	f = fopen(path, "ae");
	if (!f ||
	    fprintf(f, "V\t%.*s\t\t%s\tunknown\t%s\n", ASN1_STRING_length(na),
		    (const char *)ASN1_STRING_get0_data(na), hex, subj) < 0 ||
	    fflush(f) || fsync(fileno(f))) {
		tool_err("cannot append to %s: %s", path, strerror(errno));
		return -EIO;
	}
	return 0;
}

/* --- building certificates ------------------------------------------------ */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e && X509_add_ext(x, e, -1);

	X509_EXTENSION_free(e);
	if (!ok) {
		tool_err("cannot add %s = %s: %s", OBJ_nid2sn(nid), value,
			 ossl_why());
		return -EINVAL;
	}
	return 0;
}

static EVP_PKEY *gen_key(const char *type)
{
	EVP_PKEY *k = NULL;

	if (!strcmp(type, "ec-p256"))
		k = EVP_EC_gen("P-256");
	else if (!strcmp(type, "ec-p384"))
		k = EVP_EC_gen("P-384");
	else if (!strcmp(type, "rsa-3072"))
		k = EVP_RSA_gen(3072);
	else {
		tool_err("unknown key type '%s': use ec-p256, ec-p384 or "
			 "rsa-3072",
			 type);
		return NULL;
	}
	if (!k)
		tool_err("cannot generate a %s key: %s", type, ossl_why());
	return k;
}

static X509_NAME *name_cn(const char *cn)
{
	X509_NAME *n = X509_NAME_new();

	if (n &&
	    !X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0)) {
		X509_NAME_free(n);
		n = NULL;
	}
	return n;
}

/*
 * notBefore now, notAfter now + days, but never after the issuer's
 * notAfter (a certificate outliving its CA is refused by verifiers).
 */
static int set_validity(X509 *x, X509 *issuer, long days)
{
	if (!X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
		return -EINVAL;
	if (issuer && ASN1_TIME_compare(X509_get0_notAfter(x),
					X509_get0_notAfter(issuer)) > 0) {
		fprintf(stderr,
			"edgebridge: note: validity shortened to the issuing "
			"CA's notAfter\n");
		if (!X509_set1_notAfter(x, X509_get0_notAfter(issuer)))
			return -EINVAL;
	}
	return 0;
}

/*
 * A CA certificate for key: self-signed when issuer is NULL, else signed by
 * issuer/ikey.  pathlen < 0: no pathlen constraint.
 */
static X509 *make_ca_cert(const char *cn, EVP_PKEY *key, long pathlen,
			  long days, ASN1_INTEGER *serial, X509 *issuer,
			  EVP_PKEY *ikey)
{
	_cleanup_(x509p) X509 *x = X509_new();
	X509_NAME *name = name_cn(cn);
	X509V3_CTX ctx;
	char bc[64];
	bool ok;

	ok = x && name && X509_set_version(x, X509_VERSION_3) &&
	     X509_set_serialNumber(x, serial) &&
	     X509_set_subject_name(x, name) &&
	     X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
					    : name) &&
	     X509_set_pubkey(x, key) && set_validity(x, issuer, days) == 0;
	X509_NAME_free(name);
	if (!ok) {
		tool_err("cannot build the certificate: %s", ossl_why());
		return NULL;
	}
	if (pathlen >= 0)
		snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%ld",
			 pathlen);
	else
		snprintf(bc, sizeof(bc), "critical,CA:TRUE");
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, bc) ||
	    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
		return NULL;
	if (!X509_sign(x, issuer ? ikey : key, EVP_sha256())) {
		tool_err("cannot sign the certificate: %s", ossl_why());
		return NULL;
	}
	return TAKE_PTR(x);
}

static ASN1_INTEGER *random_serial(void)
{
	unsigned char b[16];
	_cleanup_(bnp) BIGNUM *bn = NULL;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return NULL;
	b[0] &= 0x7f; /* positive */
	b[0] |= 0x40; /* and 16 bytes long */
	bn = BN_bin2bn(b, sizeof(b), NULL);
	return bn ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
}

/* Creates D (0700, and its parents) and refuses one that already holds a
 * CA. */
static int prepare_dir(const char *dir)
{
	char path[PATH_MAX];
	int r = eb_mkdir_p(dir, 0755, 0700);

	if (r < 0) {
		tool_err("cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	if (path_in(path, sizeof(path), dir, "ca.key"))
		return -ENAMETOOLONG;
	if (access(path, F_OK) == 0) {
		tool_err("%s already holds a CA (%s): choose another --dir, "
			 "or remove it to start over",
			 dir, path);
		return -EEXIST;
	}
	return 0;
}

/* Writes a new CA's files: key (0600), cert, chain, serial, index. */
static int write_ca_dir(const char *dir, EVP_PKEY *key, X509 *cert,
			X509 *const *above, size_t n_above)
{
	X509 *chain[MAX_CHAIN + 1];
	char path[PATH_MAX];
	size_t n = 0;
	int r;

	chain[n++] = cert;
	for (size_t i = 0; i < n_above && n < EB_ARRAY_SIZE(chain); i++)
		chain[n++] = above[i];
	if ((r = path_in(path, sizeof(path), dir, "ca.key")) ||
	    (r = write_key(path, key)))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "ca.pem")) ||
	    (r = write_certs(path, &cert, 1)))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "chain.pem")) ||
	    (r = write_certs(path, chain, n)))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "serial")) ||
	    (r = write_text(path, "1000\n")))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "crlnumber")) ||
	    (r = write_text(path, "1000\n")))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "index.txt")) ||
	    (access(path, F_OK) && (r = write_text(path, ""))))
		return r;
	if ((r = path_in(path, sizeof(path), dir, "index.txt.attr")) ||
	    (r = write_text(path, "unique_subject = no\n")))
		return r;
	return 0;
}

/* --- ca init -------------------------------------------------------------- */

int cmd_ca_init(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "cn", required_argument, NULL, 'n' },
		{ "pathlen", required_argument, NULL, 'p' },
		{ "days", required_argument, NULL, 'D' },
		{ "key-type", required_argument, NULL, 'k' },
		{ 0 },
	};
	const char *dir = NULL, *cn = "edgebridge development root CA";
	const char *type = "ec-p256";
	long pathlen = -1, days = 3650;
	_cleanup_(pkeyp) EVP_PKEY *key = NULL;
	_cleanup_(x509p) X509 *cert = NULL;
	_cleanup_(asn1intp) ASN1_INTEGER *serial = NULL;
	char subj[256];
	int c;

	(void)t;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'n':
			cn = optarg;
			break;
		case 'p':
			if (parse_num("ca init", "--pathlen", optarg, 0, 16,
				      &pathlen))
				return 2;
			break;
		case 'D':
			if (parse_num("ca init", "--days", optarg, 1, 36500,
				      &days))
				return 2;
			break;
		case 'k':
			type = optarg;
			break;
		default:
			return bad_option("ca init", c, argv);
		}
	}
	if (!dir || optind < argc || !*cn) {
		tool_err("usage: edgebridge ca init --dir D [--cn NAME] "
			 "[--pathlen N] [--days N] [--key-type "
			 "ec-p256|rsa-3072]");
		return 2;
	}
	if (prepare_dir(dir))
		return 1;
	key = gen_key(type);
	serial = random_serial();
	if (!key || !serial)
		return 1;
	cert = make_ca_cert(cn, key, pathlen, days, serial, NULL, NULL);
	if (!cert || write_ca_dir(dir, key, cert, NULL, 0))
		return 1;
	X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof(subj));
	printf("root CA %s in %s\n"
	       "  certificate %s/ca.pem: upload it to the cloud's trusted "
	       "certificates\n"
	       "  key %s/ca.key (0600): keep it off the devices\n",
	       subj, dir, dir, dir);
	return 0;
}

/* --- ca intermediate ------------------------------------------------------ */

int cmd_ca_intermediate(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "parent", required_argument, NULL, 'P' },
		{ "cn", required_argument, NULL, 'n' },
		{ "pathlen", required_argument, NULL, 'p' },
		{ "days", required_argument, NULL, 'D' },
		{ "key-type", required_argument, NULL, 'k' },
		{ 0 },
	};
	const char *dir = NULL, *parent = NULL;
	const char *cn = "edgebridge development intermediate CA";
	const char *type = "ec-p256";
	long pathlen = -2, days = 1825, ppl;
	struct ca pca = { .lock_fd = -1 };
	_cleanup_(pkeyp) EVP_PKEY *key = NULL;
	_cleanup_(x509p) X509 *cert = NULL;
	_cleanup_(asn1intp) ASN1_INTEGER *serial = NULL;
	char subj[256];
	int c, rc = 1;

	(void)t;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'P':
			parent = optarg;
			break;
		case 'n':
			cn = optarg;
			break;
		case 'p':
			if (parse_num("ca intermediate", "--pathlen", optarg, 0,
				      16, &pathlen))
				return 2;
			break;
		case 'D':
			if (parse_num("ca intermediate", "--days", optarg, 1,
				      36500, &days))
				return 2;
			break;
		case 'k':
			type = optarg;
			break;
		default:
			return bad_option("ca intermediate", c, argv);
		}
	}
	if (!dir || !parent || optind < argc || !*cn) {
		tool_err("usage: edgebridge ca intermediate --dir D --parent P "
			 "[--cn NAME] [--pathlen N] [--days N] [--key-type "
			 "ec-p256|rsa-3072]");
		return 2;
	}
	if (ca_load(&pca, parent, true))
		goto out;
	/* The parent's pathlen bounds ours: it counts the CAs below it. */
	ppl = X509_get_pathlen(pca.cert);
	if (ppl == 0) {
		tool_err("the CA in %s has pathlen:0, so it may sign devices "
			 "only: make the intermediate under a CA created with "
			 "a larger --pathlen (or none)",
			 parent);
		goto out;
	}
	if (pathlen == -2)
		pathlen = ppl > 0 ? ppl - 1 : 0;
	else if (ppl > 0 && pathlen > ppl - 1) {
		tool_err("--pathlen %ld is too large: the CA in %s has "
			 "pathlen:%ld, so an intermediate below it may have at "
			 "most pathlen:%ld",
			 pathlen, parent, ppl, ppl - 1);
		goto out;
	}
	if (prepare_dir(dir))
		goto out;
	key = gen_key(type);
	if (!key)
		goto out;
	serial = take_number(parent, "serial");
	if (!serial)
		goto out;
	cert = make_ca_cert(cn, key, pathlen, days, serial, pca.cert, pca.key);
	if (!cert || write_ca_dir(dir, key, cert, pca.chain, pca.n_chain) ||
	    index_append(parent, cert))
		goto out;
	X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof(subj));
	printf("intermediate CA %s (pathlen:%ld) in %s, signed by %s\n"
	       "  chain %s/chain.pem (this CA up to the root)\n",
	       subj, pathlen, dir, parent, dir);
	rc = 0;
out:
	ca_free(&pca);
	return rc;
}

/* --- ca sign -------------------------------------------------------------- */

static X509_REQ *read_csr(const char *path)
{
	BIO *bio = BIO_new_file(path, "r");
	X509_REQ *req = NULL;

	if (bio) {
		req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
		if (!req && BIO_reset(bio) == 0)
			req = d2i_X509_REQ_bio(bio, NULL); /* DER */
		BIO_free(bio);
	}
	if (!req)
		tool_err("cannot read the CSR %s: %s", path, ossl_why());
	return req;
}

/* The device rules the clouds enforce, refused before anything is issued. */
static int check_csr(const char *path, X509_REQ *req, char *cn, size_t len,
		     bool *rsa)
{
	EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
	char group[64];
	int id, bits, nid = NID_undef;

	if (!pk || X509_REQ_verify(req, pk) != 1) {
		ERR_clear_error();
		tool_err("the signature of the CSR %s does not verify: it was "
			 "not made with the key it carries, or it was altered; "
			 "make a new one (edgebridge cert csr)",
			 path);
		return -EINVAL;
	}
	if (X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req),
				      NID_commonName, cn, (int)len) <= 0) {
		tool_err("the CSR %s has no CN (or an empty one): make it "
			 "with --cn set to the gateway.id",
			 path);
		return -EINVAL;
	}
	if (strchr(cn, ':')) {
		tool_err("the CSR's CN '%s' contains ':', which Cumulocity "
			 "refuses (it separates tenant and template in the "
			 "client id): use a gateway.id without ':'",
			 cn);
		return -EINVAL;
	}
	id = EVP_PKEY_get_base_id(pk);
	bits = EVP_PKEY_get_bits(pk);
	*rsa = id == EVP_PKEY_RSA;
	if (*rsa && bits < 2048) {
		tool_err("the CSR's key is RSA-%d: the clouds need RSA >= 2048 "
			 "or EC P-256/P-384; make a new key",
			 bits);
		return -EINVAL;
	}
	if (id == EVP_PKEY_EC &&
	    EVP_PKEY_get_group_name(pk, group, sizeof(group), NULL))
		nid = OBJ_sn2nid(group);
	if (!*rsa && nid != NID_X9_62_prime256v1 && nid != NID_secp384r1) {
		tool_err("the CSR's key is not RSA >= 2048 nor EC P-256/P-384 "
			 "(%s): make a key the clouds take",
			 OBJ_nid2sn(id));
		return -EINVAL;
	}
	ERR_clear_error();
	return 0;
}

static X509 *make_device_cert(X509_REQ *req, bool rsa, long days,
			      ASN1_INTEGER *serial, const struct ca *ca)
{
	_cleanup_(x509p) X509 *x = X509_new();
	X509V3_CTX ctx;

	if (!x || !X509_set_version(x, X509_VERSION_3) ||
	    !X509_set_serialNumber(x, serial) ||
	    !X509_set_subject_name(x, X509_REQ_get_subject_name(req)) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    !X509_set_pubkey(x, X509_REQ_get0_pubkey(req)) ||
	    set_validity(x, ca->cert, days)) {
		tool_err("cannot build the certificate: %s", ossl_why());
		return NULL;
	}
	X509V3_set_ctx(&ctx, ca->cert, x, req, NULL, 0);
	if (add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, &ctx, NID_key_usage,
		    rsa ? "critical,digitalSignature,keyEncipherment"
			: "critical,digitalSignature") ||
	    add_ext(x, &ctx, NID_ext_key_usage, "clientAuth") ||
	    add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
	    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always"))
		return NULL;
	if (!X509_sign(x, ca->key, EVP_sha256())) {
		tool_err("cannot sign the certificate: %s", ossl_why());
		return NULL;
	}
	return TAKE_PTR(x);
}

int cmd_ca_sign(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "out", required_argument, NULL, 'o' },
		{ "days", required_argument, NULL, 'D' },
		{ "chain", no_argument, NULL, 'c' },
		{ 0 },
	};
	const char *dir = NULL, *out = NULL, *csr_path;
	long days = 365;
	bool chain = false, rsa = false;
	struct ca ca = { .lock_fd = -1 };
	_cleanup_(reqp) X509_REQ *req = NULL;
	_cleanup_(x509p) X509 *cert = NULL;
	_cleanup_(asn1intp) ASN1_INTEGER *serial = NULL;
	_cleanup_free_ char *hex = NULL;
	X509 *certs[MAX_CHAIN + 1];
	size_t n = 0;
	char cn[256];
	int c, rc = 1;

	(void)t;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'D':
			if (parse_num("ca sign", "--days", optarg, 1, 36500,
				      &days))
				return 2;
			break;
		case 'c':
			chain = true;
			break;
		default:
			return bad_option("ca sign", c, argv);
		}
	}
	if (!dir || optind + 1 != argc) {
		tool_err("usage: edgebridge ca sign --dir D CSR [-o FILE] "
			 "[--days N] [--chain]");
		return 2;
	}
	csr_path = argv[optind];
	req = read_csr(csr_path);
	if (!req || check_csr(csr_path, req, cn, sizeof(cn), &rsa))
		return 1;
	if (ca_load(&ca, dir, true))
		goto out;
	serial = take_number(dir, "serial");
	if (!serial)
		goto out;
	cert = make_device_cert(req, rsa, days, serial, &ca);
	if (!cert)
		goto out;

	/* leaf, then (with --chain) every CA up to the root, in order */
	certs[n++] = cert;
	for (size_t i = 0; chain && i < ca.n_chain; i++)
		certs[n++] = ca.chain[i];
	if (out) {
		if (write_certs(out, certs, n))
			goto out;
	} else {
		for (size_t i = 0; i < n; i++)
			PEM_write_X509(stdout, certs[i]);
		fflush(stdout);
	}
	if (index_append(dir, cert))
		goto out;
	hex = serial_hex(serial);
	fprintf(stderr, "edgebridge: signed CN=%s, serial %s%s%s%s\n", cn,
		hex ? hex : "?", out ? ", in " : "", out ? out : "",
		chain ? " (with the CA chain)" : "");
	rc = 0;
out:
	ca_free(&ca);
	return rc;
}

/* --- ca crl --------------------------------------------------------------- */

struct entry {
	char status; /* 'V', 'R', 'E' */
	char *exp, *rev, *serial, *file, *subj;
};

/* Splits one index line (modified in place) into its six fields. */
static int parse_entry(char *line, struct entry *e)
{
	char *f[6];
	size_t k = 0;

	line[strcspn(line, "\r\n")] = '\0';
	for (char *s = line; k < 6; k++) {
		f[k] = s;
		s = strchr(s, '\t');
		if (!s)
			break;
		*s++ = '\0';
	}
	if (k != 5 || strlen(f[0]) != 1)
		return -EINVAL;
	*e = (struct entry){ f[0][0], f[1], f[2], f[3], f[4], f[5] };
	return 0;
}

static bool same_serial(const char *a, const char *b)
{
	_cleanup_(bnp) BIGNUM *x = NULL;
	_cleanup_(bnp) BIGNUM *y = NULL;

	if (!strncasecmp(b, "0x", 2))
		b += 2;
	if (!BN_hex2bn(&x, a) || BN_hex2bn(&y, b) != (int)strlen(b))
		return false;
	return BN_cmp(x, y) == 0;
}

static int add_revoked(X509_CRL *crl, const struct entry *e)
{
	X509_REVOKED *rv = X509_REVOKED_new();
	_cleanup_(bnp) BIGNUM *bn = NULL;
	_cleanup_(asn1intp) ASN1_INTEGER *ai = NULL;
	ASN1_TIME *when = ASN1_TIME_new();
	char date[32];
	bool ok;

	eb_strlcpy(date, e->rev, sizeof(date));
	date[strcspn(date, ",")] = '\0'; /* "date,reason" */
	ok = rv && when && BN_hex2bn(&bn, e->serial) &&
	     (ai = BN_to_ASN1_INTEGER(bn, NULL)) &&
	     X509_REVOKED_set_serialNumber(rv, ai) &&
	     ASN1_TIME_set_string_X509(when, date) &&
	     X509_REVOKED_set_revocationDate(rv, when) &&
	     X509_CRL_add0_revoked(crl, rv);
	ASN1_TIME_free(when);
	if (!ok) {
		X509_REVOKED_free(rv);
		return -EINVAL;
	}
	return 0;
}

static X509_CRL *make_crl(const struct ca *ca, struct entry *ents, size_t n,
			  long days, ASN1_INTEGER *number)
{
	_cleanup_(crlp) X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *last = X509_gmtime_adj(NULL, 0);
	ASN1_TIME *next = X509_time_adj_ex(NULL, (int)days, 0, NULL);
	X509_EXTENSION *aki;
	X509V3_CTX ctx;
	bool ok;

	ok = crl && last && next &&
	     X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
	     X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) &&
	     X509_CRL_set1_lastUpdate(crl, last) &&
	     X509_CRL_set1_nextUpdate(crl, next);
	ASN1_TIME_free(last);
	ASN1_TIME_free(next);
	for (size_t i = 0; ok && i < n; i++)
		if (ents[i].status == 'R' && add_revoked(crl, &ents[i]))
			ok = false;
	if (!ok) {
		tool_err("cannot build the CRL: %s", ossl_why());
		return NULL;
	}
	X509V3_set_ctx(&ctx, ca->cert, NULL, NULL, crl, 0);
	aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier,
				  "keyid:always");
	ok = aki && X509_CRL_add_ext(crl, aki, -1) &&
	     X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) &&
	     X509_CRL_sort(crl) && X509_CRL_sign(crl, ca->key, EVP_sha256());
	X509_EXTENSION_free(aki);
	if (!ok) {
		tool_err("cannot sign the CRL: %s", ossl_why());
		return NULL;
	}
	return TAKE_PTR(crl);
}

/* Rewrites index.txt from the entries. */
static int write_index(const char *dir, const struct entry *ents, size_t n)
{
	char path[PATH_MAX];
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	int r;

	if (!m)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		fprintf(m, "%c\t%s\t%s\t%s\t%s\t%s\n", ents[i].status,
			ents[i].exp, ents[i].rev, ents[i].serial, ents[i].file,
			ents[i].subj);
	fclose(m);
	r = path_in(path, sizeof(path), dir, "index.txt");
	if (!r)
		r = write_text(path, buf ? buf : "");
	free(buf);
	return r;
}

int cmd_ca_crl(struct tool *t, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "revoke", required_argument, NULL, 'r' },
		{ "out", required_argument, NULL, 'o' },
		{ "days", required_argument, NULL, 'D' },
		{ 0 },
	};
	const char *dir = NULL, *revoke = NULL, *out = NULL;
	long days = 30;
	struct ca ca = { .lock_fd = -1 };
	_cleanup_(crlp) X509_CRL *crl = NULL;
	_cleanup_(asn1intp) ASN1_INTEGER *number = NULL;
	_cleanup_(filep) FILE *f = NULL;
	struct entry *ents = NULL;
	char **lines = NULL;
	size_t n = 0, cap = 0, n_rev = 0;
	char path[PATH_MAX], outp[PATH_MAX], revdate[32], *line = NULL;
	size_t llen = 0;
	bool found = false;
	int c, rc = 1;

	(void)t;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'r':
			revoke = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case 'D':
			if (parse_num("ca crl", "--days", optarg, 1, 3650,
				      &days))
				return 2;
			break;
		default:
			return bad_option("ca crl", c, argv);
		}
	}
	if (!dir || optind < argc) {
		tool_err("usage: edgebridge ca crl --dir D [--revoke SERIAL] "
			 "[-o FILE] [--days N]");
		return 2;
	}
	if (ca_load(&ca, dir, true) ||
	    path_in(path, sizeof(path), dir, "index.txt"))
		goto out;
	f = fopen(path, "re");
	if (!f) {
		tool_err("cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	while (getline(&line, &llen, f) > 0) {
		if (line[0] == '\n')
			continue;
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 16;
			struct entry *ne = realloc(ents, nc * sizeof(*ne));
			char **nl = realloc(lines, nc * sizeof(*nl));

			if (ne)
				ents = ne;
			if (nl)
				lines = nl;
			if (!ne || !nl) {
				tool_err("out of memory");
				goto out;
			}
			cap = nc;
		}
		lines[n] = strdup(line);
		if (!lines[n] || parse_entry(lines[n], &ents[n])) {
			tool_err("%s: line %zu is not an index entry: repair "
				 "the file",
				 path, n + 1);
			free(lines[n]);
			goto out;
		}
		n++;
	}

	if (revoke) {
		for (size_t i = 0; i < n && !found; i++) {
			ASN1_TIME *now;

			if (!same_serial(ents[i].serial, revoke))
				continue;
			found = true;
			if (ents[i].status == 'R') {
				fprintf(stderr,
					"edgebridge: serial %s (%s) was "
					"already revoked\n",
					ents[i].serial, ents[i].subj);
				break;
			}
			now = X509_gmtime_adj(NULL, 0);
			if (!now)
				goto out;
			snprintf(revdate, sizeof(revdate), "%.*s",
				 ASN1_STRING_length(now),
				 (const char *)ASN1_STRING_get0_data(now));
			ASN1_TIME_free(now);
			ents[i].status = 'R';
			ents[i].rev = revdate;
			fprintf(stderr, "edgebridge: revoked serial %s\n",
				revoke);
		}
		if (!found) {
			tool_err("serial %s is not in %s: give the serial as "
				 "`openssl x509 -serial` prints it (hex)",
				 revoke, path);
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++)
		n_rev += ents[i].status == 'R';
	number = take_number(dir, "crlnumber");
	if (!number)
		goto out;
	crl = make_crl(&ca, ents, n, days, number);
	if (!crl)
		goto out;
	if (revoke && write_index(dir, ents, n))
		goto out;
	if (!out) {
		if (path_in(outp, sizeof(outp), dir, "crl.pem"))
			goto out;
		out = outp;
	}
	{
		BIO *bio = BIO_new_file(out, "w");
		bool ok = bio && PEM_write_bio_X509_CRL(bio, crl);

		BIO_free(bio);
		if (!ok) {
			tool_err("cannot write %s: %s", out, ossl_why());
			goto out;
		}
	}
	printf("CRL of %s with %zu revoked certificate(s) in %s (next update "
	       "in %ld days)\n",
	       dir, n_rev, out, days);
	rc = 0;
out:
	free(line);
	for (size_t i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
	free(ents);
	ca_free(&ca);
	return rc;
}
