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

# Run: no compiler, not root, data in a volume. The database is the default
# ./data/watchtime.db, in /app/data: no WATCHTIME_DB is set here, so that
# -e WATCHTIME_DB and -e WATCHTIME_DB_FILE both work.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY sql ./sql
COPY src/web ./src/web
RUN mkdir /app/data && chown node:node /app/data
USER node
VOLUME /app/data
EXPOSE 8000
# Liveness, not readiness: a restart helps a process that stopped answering,
# not one whose disk is full or whose database is away (/readyz says those).
# It asks the port of WATCHTIME_PORT: set the port that way, not with --port.
# The start period covers migrations, which run before the server listens.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD node -e "fetch('http://127.0.0.1:' + (process.env.WATCHTIME_PORT || 8000) + '/livez').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
# The server handles SIGTERM itself (drain, flush, checkpoint, exit 0), so it can be PID 1.
# docker stop waits 10 s by default: give it the drain and the grace (`docker stop -t 20`,
# compose's stop_grace_period) when a load balancer drains it for --drain-ms first.
ENTRYPOINT ["node", "bin/watchtime"]
# serve's defaults are all interfaces and port 8000; WATCHTIME_* variables change them.
CMD ["serve"]
