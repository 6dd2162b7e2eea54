// tier: local
// Crash-safety fault tests on local hosts (ansible_connection: local, one directory each).
import { crashScenarios, localFleet } from './crash-common.js';

crashScenarios('local', async () => localFleet(5));
