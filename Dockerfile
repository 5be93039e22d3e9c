# syntax=docker/dockerfile:1

# Node 24, an LTS maintained until 2028 (Node 20 reached its end of life in
# April 2026). The code keeps working on Node 20, where its tests run.
ARG NODE_IMAGE=node:24-bookworm-slim

# Build: compile better-sqlite3's native binding and the TypeScript, then drop
# what only the build needs: dev packages (pino-pretty, the test tools) and
# better-sqlite3's sources and object files (about 25 MB).
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci runs the prepare script, which builds dist/.
RUN npm ci \
 && npm prune --omit=dev \
 && cd node_modules/better-sqlite3 \
 && find . -mindepth 1 -maxdepth 1 ! -name lib ! -name build ! -name package.json ! -name LICENSE -exec rm -rf {} + \
 && find build -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + \
 && find build/Release -mindepth 1 -maxdepth 1 ! -name better_sqlite3.node -exec rm -rf {} + \
 && test -f build/Release/better_sqlite3.node

# Run: no compiler, not root, data in a volume.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    WATCHTIME_DB=/data/watchtime.db
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY sql ./sql
COPY src/web ./src/web
RUN mkdir /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 8000
# Liveness, not readiness: a restart helps a process that stopped answering,
# not one whose disk is full or whose database is away (/readyz says those).
HEALTHCHECK --interval=10s --timeout=3s \
  CMD node -e "fetch('http://127.0.0.1:8000/livez').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
# The server handles SIGTERM itself (drain, flush, checkpoint, exit 0), so it can be PID 1.
# docker stop waits 10 s by default: give it more (`docker stop -t 30`, compose's
# stop_grace_period) when a load balancer drains it for --drain-ms first.
ENTRYPOINT ["node", "bin/watchtime"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
