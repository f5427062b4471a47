import { loadConfig } from '../lib/config';
import { provisionPlatform } from '../lib/provision';
import { createVault } from '../lib/vault';
import { ensureSandboxCredential } from '../sandboxes/payment-provider/bootstrap';
import { CONFIG_USAGE, configCommand } from './config';
import { RUNBOOK_USAGE, runbookCommand } from './runbook';
import { stackCommand } from './stack';

const USAGE = `usage: flowgate <command>
  stack up|down|status|logs|reset|env   the local stack (make up / down / status / logs / reset)
  provision                             migrations, streams, topics, KV mount, search attributes (FLOWGATE_* env);
                                        with FLOWGATE_PAYMENT_SANDBOX_URL also the sandbox provider's key in Vault
${CONFIG_USAGE}
${RUNBOOK_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'stack':
      return stackCommand(rest);
    case 'config':
      return configCommand(rest);
    case 'runbook':
      return runbookCommand(rest);
    case 'provision': {
      const config = loadConfig('admin');
      await provisionPlatform(config, (m) => console.log(m));
      // Where the sandbox payment provider runs (docker-compose), its API key goes into Vault.
      const sandbox = process.env.FLOWGATE_PAYMENT_SANDBOX_URL;
      if (sandbox) console.log(`payment sandbox API key in Vault (${await ensureSandboxCredential(createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN), sandbox)})`);
      return 0;
    }
    default:
      console.error(USAGE);
      return cmd ? 2 : 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // An operator's mistake or an unreachable service is one line; a stack trace only with FLOWGATE_DEBUG.
    const message = err instanceof Error ? `${err.message}${(err as { cause?: Error }).cause?.message ? ` (${(err as { cause?: Error }).cause!.message})` : ''}` : String(err);
    console.error(process.env.FLOWGATE_DEBUG && err instanceof Error ? err.stack : `flowgate: ${message}`);
    process.exit(1);
  },
);
