/*
 * fixture_server — the management API over the in-memory backend, as a
 * process, so test_tandemctl.sh can drive the real tandemctl against it.
 *
 *   fixture_server DATA_DIR [CERT KEY]
 *       prints the bound port on stdout, serves (over TLS with CERT and KEY)
 *       until SIGTERM or SIGINT, exits 0.
 */
#include <signal.h>
#include <stdio.h>

#include "fixture.h"
#include "tnd_mgmt.h"

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 4) {
		fprintf(stderr, "usage: fixture_server DATA_DIR [CERT KEY]\n");
		return 2;
	}
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	struct fixture *fx = fixture_create();
	fixture_add_session(fx, "1", "iqn.2026-11.io.tandem:t1", "iqn.1994-05.com.redhat:host1");
	struct tnd_mgmt_opts o = {
		.bind = "127.0.0.1:0",
		.data_dir = argv[1],
		.ops = &fixture_ops,
		.ctx = fx,
		.device_types = fixture_device_types,
		.tls_cert_file = argc == 4 ? argv[2] : NULL,
		.tls_key_file = argc == 4 ? argv[3] : NULL,
	};
	struct tnd_mgmt *m;
	char err[512];
	if (tnd_mgmt_create(&o, &m, err, sizeof(err))) {
		fprintf(stderr, "fixture_server: %s\n", err);
		return 1;
	}
	printf("%u\n", tnd_mgmt_port(m));
	fflush(stdout);
	int sig;
	sigwait(&sigs, &sig);
	tnd_mgmt_destroy(m);
	fixture_destroy(fx);
	return 0;
}
