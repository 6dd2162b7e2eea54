// Crash-safety fault tests on real OpenSSH hosts (test/harness/sshd.ts; network namespaces as root).
import { crashScenarios, sshFleet } from './crash-common.js';

crashScenarios('ssh', async () => sshFleet(5));
