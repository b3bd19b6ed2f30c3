# twinhub: the two commands.
#   make dev    install what is missing, build, run hub + dashboard + device endpoint on :8787
#               under workerd directly (make dev-reload: the same through wrangler dev)
#   make test   install what tests need, build, and run every test
.PHONY: dev dev-reload test build tools deploy
dev:
	@scripts/dev.sh
test:
	@scripts/test.sh
build: tools
	@scripts/build.sh
tools:
	@scripts/tools.sh
# The code-reload loop: the same Worker through `wrangler dev`.
dev-reload:
	@scripts/dev.sh --reload
deploy: build
	node_modules/.bin/wrangler deploy
