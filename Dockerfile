# Flowgate's four processes share one image; the command picks the process.
# syntax=docker/dockerfile:1
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY lib lib
COPY gateway gateway
COPY admin admin
COPY triggers triggers
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY cli cli
COPY stack stack
COPY sandboxes sandboxes
# The workflow bundle is built here, once: workers start without webpack and all run the same code.
RUN npx tsc -p tsconfig.build.json \
 && cp -r lib/db/migrations dist/lib/db/ \
 && node dist/worker/bundle.js dist/workflow-bundle.js \
 && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production FLOWGATE_HOST=0.0.0.0 FLOWGATE_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js
WORKDIR /app
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY package.json ./
# The gateway's audit spool (FLOWGATE_SPOOL_DIR); a named volume mounted here takes this owner.
RUN mkdir -p /var/lib/flowgate/spool && chown -R node:node /var/lib/flowgate
USER node
EXPOSE 8000 8001 9400 9401 9402 9403
STOPSIGNAL SIGTERM
CMD ["node", "dist/gateway/main.js"]
