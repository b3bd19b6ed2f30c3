# twinhub: the two commands.
#   make dev    install what is missing, build, run hub + dashboard + device endpoint on :8787
#   make test   install what tests need, build, and run every test
.PHONY: dev test build tools deploy
dev:
	@scripts/dev.sh
test:
	@scripts/test.sh
build: tools
	@scripts/build.sh
tools:
	@scripts/tools.sh
deploy: build
	node_modules/.bin/wrangler deploy
